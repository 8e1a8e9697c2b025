"""Read and programming energy of a crossbar array: a component of
:class:`~crossbar_ep.crossbar.array.CrossbarMatrix` reading the array's conductances (its
mapping), tiles, wires, I-V law and DAC (its reader); the
:class:`~crossbar_ep.crossbar.energy.EnergyMeter` observer calls the array's ``read_energy``
and ``program_energy``, which ask this."""

from __future__ import annotations

import numba
import numpy as np

# The read energy of a batch is computed from its first this-many samples and scaled to the
# batch (exact for smaller batches): with wire resistance the source admittance is dense and
# V^T Y V would cost as much as the read itself.  Batches are random draws, so the per-epoch
# energy is unbiased.
_ENERGY_SAMPLES = 32


@numba.njit(cache=True, fastmath=True)
def drive_power_sum(v, step, levels, k, law, v0, coeffs, Y):
    """``sum_b sum_i V f(V) Y_i`` over a drive v (B, n) in input units (C-contiguous): V =
    DAC(v) k volts (DAC: clip to +-levels steps of ``step`` and round; levels 0: no DAC),
    f the I-V law (law 0 linear, 1 sinh with scale v0, 2 polynomial V + sum a_m V^(2m+3)),
    Y (n,) the line admittances (S).  Per-line sums over the batch, then one dot product
    with Y, in float64; returns W (J per second of read)."""
    lim = step * levels
    inv = 1.0 / step
    acc = np.zeros(v.shape[1])
    x = np.empty(v.shape[1])
    for b in range(v.shape[0]):           # one loop per case, so the common ones vectorise
        if levels > 0:
            for i in range(x.size):
                x[i] = np.rint(min(max(np.float64(v[b, i]), -lim), lim) * inv) * (step * k)
        else:
            for i in range(x.size):
                x[i] = np.float64(v[b, i]) * k
        if law == 1:
            for i in range(x.size):
                V = x[i]
                e = np.exp(V / v0)               # sinh from one exp (1.7x faster)
                acc[i] += V * 0.5 * v0 * (e - 1.0 / e)
        elif law == 2:
            for i in range(x.size):
                V = x[i]
                fV = V
                p = V * V * V
                for m in range(coeffs.size):
                    fV += coeffs[m] * p
                    p *= V * V
                acc[i] += V * fV
        else:
            for i in range(x.size):
                acc[i] += x[i] * x[i]
    total = 0.0
    for i in range(acc.size):
        total += acc[i] * Y[i]
    return total


@numba.njit(cache=True, fastmath=True)
def abs_count_dot(n, g):
    """``sum_i |n_i| g_i`` over flat signed counts n (int64) and conductances g (S): the
    programming sum of one device array in one pass (no temporary arrays)."""
    total = 0.0
    for i in range(n.size):
        total += np.float64(abs(n[i])) * g[i]
    return total


class ArrayEnergy:
    """Energy of the reads and pulses of one crossbar array (units: J, S, V)."""

    def __init__(self, reader, mapping, card):
        self.reader, self.mapping, self.card = reader, mapping, card
        self.n_out, self.n_in = reader.n_out, reader.n_in
        self._eops = None

    def invalidate(self) -> None:
        """The conductances changed: recompute the admittances at the next read."""
        self._eops = None

    def _energy_operands(self) -> dict:
        """Per tile: (forward admittance: row sums (rows,) or dense (rows, rows); transposed:
        per-output sums (outputs,) or dense D^T Y D (outputs, outputs)) in S, with D the
        transposed drive (+V / -V on a pair; V on the devices and 0 V on the reference
        column).  Ideal wires: a driven line draws ``V sum_j G f(V) / V``; with wires, the
        exact source admittance of each direction at the last nodal solve (first order
        since; the transposed one is solved here when the reads did not need it)."""
        if self._eops is not None:
            return self._eops
        m, r = self.mapping, self.reader
        gp, gn = m.conductances()
        ops = {}
        for rt in r.tiling.row_tiles:
            for ct in r.tiling.col_tiles:
                key = (rt.start, ct.start)
                bp, bn = gp[ct, rt], (None if gn is None else gn[ct, rt])
                fwd, bwd, _ = m.line_sums(bp, bn)
                if r.circuits:
                    fwd, Yt = r.circuits[key].admittances(m.physical_tile(bp, bn))
                    if m.name == "differential":   # D^T Yt D with D = +1 / -1 pairs
                        bwd = Yt[0::2, 0::2] - Yt[0::2, 1::2] - Yt[1::2, 0::2] + Yt[1::2, 1::2]
                    else:                               # the reference column at 0 V
                        bwd = Yt[:-1, :-1]
                ops[key] = (fwd, bwd)
        self._eops = ops
        p, iv = r.per, r.iv
        levels = 0 if p.dac_bits is None else 2 ** (p.dac_bits - 1) - 1
        law = 0 if iv.linear else (1 if iv.law == "sinh" else 2)
        self._edrive = (p.input_range / levels if levels else 1.0, levels,
                        p.v_read_V / p.input_range, law, float(iv.v0_V),
                        np.asarray(iv.coeffs, float).reshape(-1))
        nr, nc = len(r.tiling.row_tiles), len(r.tiling.col_tiles)   # conversions per sample
        self._econv = {False: (self.n_in * nc, self.n_out * nr),
                       True: (self.n_out * nr, self.n_in * nc)}
        self._eflat = {False: self._flat_admittance(ops, 0, self.n_in, True),
                       True: self._flat_admittance(ops, 1, self.n_out, False)}
        return ops

    def _flat_admittance(self, ops: dict, i: int, n: int, by_rows: bool):
        """The per-line conductances of one read direction summed over the tiles it drives,
        (n,) in S, when every tile's is a vector (ideal wires); None with dense admittances.
        A read's energy is then one product instead of one per tile."""
        full = np.zeros(n)
        for (r0, c0), op in ops.items():
            Y = op[i]
            if Y.ndim != 1:
                return None
            start = r0 if by_rows else c0
            full[start:start + Y.size] += Y
        return full

    def read_energy(self, v: np.ndarray, transposed: bool = False) -> tuple[float, int, int]:
        """Energy of one read driven by v (B, n_in) (or (B, n_out) transposed), summed over
        the batch: (array energy in J = t_read x sum over tiles of the drivers' power with the
        DAC's voltages V: ``sum_i V_i f(V_i) Y_i`` with ideal wires and the device I-V law f,
        ``V^T Y V`` with wires (linear devices); from the first ``_ENERGY_SAMPLES`` samples
        scaled to B; DAC conversions, ADC conversions).  The reference column is not driven
        in the transposed read (its current is subtracted in the periphery): no energy."""
        B = v.shape[0]
        Bs = min(B, _ENERGY_SAMPLES)      # subsample of the batch, scaled to the batch
        ops = self._energy_operands()
        flat = self._eflat[transposed]
        if flat is not None:      # ideal wires: sum_b sum_i V_bi f(V_bi) Y_i over the read
            E = drive_power_sum(np.ascontiguousarray(v[:Bs]), *self._edrive, flat)
        else:
            per = self.reader.per
            vq = np.asarray(self.reader.dac.convert(v[:Bs]), float) * (per.v_read_V /
                                                                       per.input_range)
            E = 0.0
            for (r0, c0), (fwd, bwd) in ops.items():
                n = bwd.shape[0] if transposed else fwd.shape[0]
                s0 = c0 if transposed else r0
                V = vq[:, s0:s0 + n]
                E += float(np.sum((V @ (bwd if transposed else fwd)) * V))
        E *= B / Bs
        dac, adc = self._econv[transposed]
        return E * self.reader.per.t_read_s, B * dac, B * adc

    def program_energy(self, counts: np.ndarray) -> float:
        """Energy (J) of the pulses ``counts`` (signed, (n_out, n_in); a differential pair's
        G- takes the opposite count) at the conductances before they fire:
        ``sum |n| V_write^2 G t_pulse``."""
        k = self.card.write_voltage_V ** 2 * self.card.pulse_width_s
        return k * self.mapping.programming_sum(counts)

"""Read and programming energy of a crossbar array: a mixin of
:class:`~crossbar_ep.crossbar.array.CrossbarMatrix` (the array's conductances, tiles, wires,
I-V law and DAC are its own; the :class:`~crossbar_ep.crossbar.energy.EnergyMeter` observer
calls these methods)."""

from __future__ import annotations

import numpy as np

# The read energy of a batch is computed from its first this-many samples and scaled to the
# batch (exact for smaller batches): with wire resistance the source admittance is dense and
# V^T Y V would cost as much as the read itself.  Batches are random draws, so the per-epoch
# energy is unbiased.
_ENERGY_SAMPLES = 32


class ArrayEnergy:
    """Energy of the reads and pulses of one crossbar array (units: J, S, V)."""

    def _energy_operands(self) -> dict:
        """Per tile: (forward admittance: row sums (rows,) or dense (rows, rows); transposed:
        per-output sums (outputs,) or dense D^T Y D (outputs, outputs)) in S, with D the
        transposed drive (+V / -V on a pair; V on the devices and 0 V on the reference
        column).  Ideal wires: a driven line draws ``V sum_j G f(V) / V``; with wires, the
        exact source admittance of each direction at the last nodal solve (first order
        since; the transposed one is solved here when the reads did not need it)."""
        if self._eops is not None:
            return self._eops
        m = self.mapping
        gp, gn = m.conductances()
        ops = {}
        for rt in self.row_tiles:
            for ct in self.col_tiles:
                key = (rt.start, ct.start)
                bp, bn = gp[ct, rt], (None if gn is None else gn[ct, rt])
                fwd, bwd, _ = m.line_sums(bp, bn)
                if self._ir:
                    fwd, Yt = self._ir[key].admittances(m.physical_tile(bp, bn))
                    if self.signed == "differential":   # D^T Yt D with D = +1 / -1 pairs
                        bwd = Yt[0::2, 0::2] - Yt[0::2, 1::2] - Yt[1::2, 0::2] + Yt[1::2, 1::2]
                    else:                               # the reference column at 0 V
                        bwd = Yt[:-1, :-1]
                ops[key] = (fwd, bwd)
        self._eops = ops
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
        vq = np.asarray(self._dac_only(v[:Bs]), float) * (self.per.v_read_V /
                                                           self.per.input_range)
        ops = self._energy_operands()
        flat = self._eflat[transposed]
        if flat is not None:      # ideal wires: sum_b sum_i V_bi f(V_bi) Y_i over the read
            fv = vq if self.iv.linear else self.iv.f(vq)
            E = float(np.einsum("bi,bi,i->", vq, fv, flat))
        else:
            E = 0.0
            for (r0, c0), (fwd, bwd) in ops.items():
                n = bwd.shape[0] if transposed else fwd.shape[0]
                s0 = c0 if transposed else r0
                V = vq[:, s0:s0 + n]
                E += float(np.sum((V @ (bwd if transposed else fwd)) * V))
        E *= B / Bs
        n_tiles_other = len(self.row_tiles) if transposed else len(self.col_tiles)
        dac = B * (self.n_out if transposed else self.n_in) * n_tiles_other
        adc = B * (self.n_in if transposed else self.n_out) * (
            len(self.col_tiles) if transposed else len(self.row_tiles))
        return E * self.per.t_read_s, dac, adc

    def program_energy(self, counts: np.ndarray) -> float:
        """Energy (J) of the pulses ``counts`` (signed, (n_out, n_in); a differential pair's
        G- takes the opposite count) at the conductances before they fire:
        ``sum |n| V_write^2 G t_pulse``."""
        k = self.card.write_voltage_V ** 2 * self.card.pulse_width_s
        return k * self.mapping.programming_sum(np.abs(counts))

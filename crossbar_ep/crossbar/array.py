"""A weight matrix stored in resistive crossbar tiles, read forward and transposed.

Mapping (documented rule): a projection's weights W (n_out, n_in) are stored as normalised
conductances ``u = (G - G_min) / (G_max - G_min)`` in [0, 1] with a per-layer scale ``S``
(weight units per unit of u):

- differential pairs: ``W = S (u+ - u-)``, programmed symmetrically ``u+- = 1/2 +- W / (2 S)``;
- one device plus a reference column at mid conductance: ``W = S (2 u - 1)``.

``S = weight_range_factor * max |W_init|``, so the initial weights use ``1 / factor`` of the
range and training has headroom.  The matrix is split into tiles of ``tile_rows`` inputs by
``tile_cols`` outputs.  A forward read drives the rows (inputs) and senses the columns; the
transposed read drives the columns and senses the rows of the same tiles, giving W^T for the
tied feedback path.  Each tile's partial output passes its own read noise and ADC before the
partial sums are added digitally, as in tiled chips.  With ideal periphery the reads are exact
products with the effective matrix ``W_eff`` and tiling changes nothing.
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar_ep import fastrng
from crossbar_ep.circuit.ir_drop import TileIRDrop, WireSettings
from crossbar_ep.circuit.iv import IVLaw
from crossbar_ep.crossbar.array_energy import ArrayEnergy
from crossbar_ep.crossbar.drift import compensation_gain
from crossbar_ep.crossbar.mapping import MAPPINGS
from crossbar_ep.crossbar.periphery import (  # noqa: F401
    Periphery,
    abs_max_read,
    dac_kernel,
    quantize,
    sense_accumulate,
    seed_read_lanes,
    sense_rows,
)
from crossbar_ep.devices.card import DeviceCard
from crossbar_ep.model.operators import WeightOperator, gemm_into

# A read whose partial outputs (driven groups x rows x sensed lines) exceed BLOCKED_READ_BYTES
# is done in blocks of rows of about SENSE_BLOCK_BYTES (half this machine's 1 MiB L2), so
# each block's GEMM output is sensed while it is still in cache (e.g. a dense net at batch
# 2000, or a conv kernel read with larger patch chunks than model/conv.py's).  Smaller reads
# (the dense nets' 2 x 500 x 512 at batch 500, conv reads in 2 MiB patch chunks) run faster
# as whole GEMMs.
SENSE_BLOCK_BYTES = 512 * 1024
BLOCKED_READ_BYTES = 4 << 20


@numba.njit(cache=True)
def _round_pulses(dw, factor, cap, seed, out):
    """out = stochastic_round(dw * factor) clipped to +-cap (cap < 0: no cap); the uniforms
    come from the counter-based stream ``seed``."""
    k = fastrng.key(seed)
    for i in range(dw.size):
        x = dw[i] * factor
        f = np.floor(x)
        n = np.int64(f) + (1 if fastrng.uniform(k, i) < x - f else 0)
        if cap >= 0:
            n = min(max(n, -cap), cap)
        out[i] = n




def _blocks(n: int, size: int) -> list:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


class CrossbarMatrix(ArrayEnergy, WeightOperator):
    """One weight matrix on crossbar tiles: device state, effective weights and reads; a
    :class:`~crossbar_ep.model.operators.WeightOperator` that learns by conductance pulses.

    ``rule`` (a pulse rule from :mod:`crossbar_ep.crossbar.pulses`) turns the local EP signals into
    pulses with the pulse gain ``lr``; without one, updates use deterministic pulse counts.
    ``seconds_per_update`` (s, default 0) is the simulated time one update (one training
    batch) takes: every :meth:`update` advances the devices' clocks by it before its pulses,
    whose refresh then shows the drift to the reads that follow.
    """

    def __init__(self, W_init: np.ndarray, card: DeviceCard, rng: np.random.Generator,
                 periphery: Periphery = Periphery(), signed: str = "differential",
                 tile_rows: int = 256, tile_cols: int = 256,
                 weight_range_factor: float = 2.0, dtype=np.float32,
                 wires: WireSettings = WireSettings(), iv: IVLaw = IVLaw()):
        super().__init__()
        iv.check_reads(signed, wires.ideal)
        self.card, self.rng, self.per = card, rng, periphery
        self.wires, self.iv = wires, iv
        self.rule, self.lr = None, 1.0
        self.rule_state, self.rule_info = {}, {}   # a stateful rule's arrays; its last stats
        self.seconds_per_update = 0.0  # simulated time (s) each update advances the clocks
        self.drift_compensation = "none"  # none | global | column (crossbar/drift.py)
        self._dac_buf, self._part_buf, self._steps, self._lanes = {}, {}, {}, {}
        self.last_counts = None  # signed pulse counts (n_out, n_in) of the last update
        self.last_program_J = 0.0  # programming energy of the last update (J)
        self.probes = {}  # (row tile, col tile) -> traces probe recording that tile's reads
        self.signed, self.dtype = signed, np.dtype(dtype)
        self.n_out, self.n_in = W_init.shape
        wmax = float(np.max(np.abs(W_init))) or 1.0
        self.scale = weight_range_factor * wmax
        if signed not in MAPPINGS:
            raise ValueError(f"signed {signed!r}: use {' or '.join(MAPPINGS)}")
        self.mapping = MAPPINGS[signed](card, W_init.shape, rng, self.scale)
        self.pos, self.neg = self.mapping.pos, self.mapping.neg
        self.row_tiles = _blocks(self.n_in, tile_rows)
        self.col_tiles = _blocks(self.n_out, tile_cols)
        self._bounds = {t: np.array([s.start for s in tiles] + [tiles[-1].stop], np.int64)
                        for t, tiles in ((False, self.col_tiles), (True, self.row_tiles))}
        self._ir = ({} if wires.ideal else
                    {(rt.start, ct.start): TileIRDrop(wires, signed, self.mapping.weight_per_S)
                     for rt in self.row_tiles for ct in self.col_tiles})
        self.program(W_init)

    def program(self, W: np.ndarray) -> None:
        """Write target weights through the device model (programming noise, clipping)."""
        self.mapping.program(np.asarray(W, float))
        self.refresh(exact=True)

    def ir_drop_deviation(self) -> tuple[float, float]:
        """(sum of squares of W_read - W_eff over the forward tile operands, sum of squares of
        W_eff): how far IR drop moves the weights the reads see from the programmed ones."""
        if not self._ir:
            return 0.0, float(np.sum(self.W_eff.astype(float) ** 2))
        dev = 0.0
        for rt in self.row_tiles:
            for ct in self.col_tiles:
                d = self._fwd_tiles[(rt.start, ct.start)] - self.W_eff[ct, rt].T
                dev += float(np.sum(d.astype(float) ** 2))
        return dev, float(np.sum(self.W_eff.astype(float) ** 2))

    @property
    def ideal_reads(self) -> bool:
        """Every read is an exact product with W_eff (ideal periphery, wires and I-V law)."""
        return self.per.ideal and self.wires.ideal and self.iv.linear

    def refresh(self, exact: bool = False) -> None:
        """Recompute the effective weight matrix from the conductances (after writes,
        drift or time steps), the per-tile read operands (with IR drop: an exact nodal solve
        every ``wires.refresh_every`` calls or when ``exact``, first order in between) and
        the per-tile ADC ranges."""
        m = self.mapping
        gp, gn = m.conductances()
        W = m.weights(gp, gn)
        gain = self._gain = compensation_gain(m, self.drift_compensation)
        if gain is not None:          # digital output gain of the drift compensation
            W = W * gain[:, None]
        self.W_eff = np.ascontiguousarray(W, dtype=self.dtype)
        self._eops, self._stale = None, False
        self.changed()
        if self._ir:
            self._fwd_tiles, self._bwd_tiles = {}, {}
            for rt in self.row_tiles:
                for ct in self.col_tiles:
                    key = (rt.start, ct.start)
                    G = m.physical_tile(gp[ct, rt], None if gn is None else gn[ct, rt])
                    fwd, bwd = self._ir[key].weights(G, exact)
                    if gain is not None:
                        fwd, bwd = fwd * gain[None, ct], bwd * gain[ct, None]
                    self._fwd_tiles[key] = np.ascontiguousarray(fwd, dtype=self.dtype)
                    self._bwd_tiles[key] = np.ascontiguousarray(bwd, dtype=self.dtype)
            self._calibrate()
            return
        self._calibrate()
        # forward read operands per driven tile row, (rows, n_out) contiguous: BLAS runs a
        # transposed-strided operand about 1.4x slower on 2 threads
        self._fwd_rows = [np.ascontiguousarray(self.W_eff[:, rt].T) for rt in self.row_tiles]

    def set_periphery(self, periphery: Periphery) -> None:
        """Swap the converters and read noise (a measurement's variants); ADC recalibrated."""
        self.per = periphery
        self._calibrate()

    def _calibrate(self) -> None:
        """ADC full scale per tile and direction: fixed, or ``adc_sigmas`` std of the tile
        output for inputs uniform on the input range (std = range * rms column norm / sqrt 3)."""
        p = self.per
        if p.adc_bits is None:
            self.fwd_range = self.bwd_range = None
            self._steps = {}
            return
        self._steps = {}
        W2 = self.W_eff.astype(float) ** 2
        s = p.input_range / np.sqrt(3.0)
        self.fwd_range, self.bwd_range = {}, {}
        for rt in self.row_tiles:
            for ct in self.col_tiles:
                key = (rt.start, ct.start)
                if p.adc_range is not None:
                    f = b = p.adc_range
                elif self._ir:   # the matrices the reads actually see
                    f = p.adc_sigmas * s * np.sqrt(
                        (self._fwd_tiles[key].astype(float) ** 2).sum(axis=0).max())
                    b = p.adc_sigmas * s * np.sqrt(
                        (self._bwd_tiles[key].astype(float) ** 2).sum(axis=0).max())
                else:
                    f = p.adc_sigmas * s * np.sqrt(W2[ct, rt].sum(axis=1).max())
                    b = p.adc_sigmas * s * np.sqrt(W2[ct, rt].sum(axis=0).max())
                self.fwd_range[key] = max(f, 1e-12)
                self.bwd_range[key] = max(b, 1e-12)

    # ------------------------------------------------------------------ reads
    def _dac(self, x: np.ndarray) -> np.ndarray:
        """Drive of a read in input units: DAC(x), then the device I-V law at the drive
        voltage, ``f(DAC(x) k) / k`` with k = v_read / input_range volts per unit (exact with
        ideal wires: every device sees its line's drive voltage; odd f keeps the
        differential pair's +-V symmetric)."""
        q = self._dac_only(x)
        if self.iv.linear:
            return q
        k = self.per.v_read_V / self.per.input_range
        return (self.iv.f(np.asarray(q) * k) / k).astype(self.dtype, copy=False)

    def _dac_only(self, x: np.ndarray) -> np.ndarray:
        p = self.per
        if p.dac_bits is None:
            return x
        levels = 2 ** (p.dac_bits - 1) - 1
        out = self._dac_buf.get(x.shape)
        if out is None:  # reused: a read consumes its DAC output before returning
            out = self._dac_buf[x.shape] = np.empty(x.shape, self.dtype)
        c = self.dtype.type
        dac_kernel(np.ascontiguousarray(x), out, c(p.input_range / levels), c(levels))
        return out

    def _noisy_matrix(self) -> np.ndarray:
        p = self.per
        if p.read_noise and p.read_noise_mode == "device":
            # conductance noise proportional to G, redrawn per read, on every device
            return self.W_eff + self.mapping.device_noise(p.read_noise, self.rng).astype(
                self.dtype)
        return self.W_eff

    def _tiled_into(self, v: np.ndarray, out: np.ndarray, gain: float,
                    transposed: bool, assign: bool) -> None:
        """Tile by tile: partial products, per-tile read noise and ADC, digital partial sums
        added (times the sense gain) into ``out`` (B, n) in place (over it if ``assign``)."""
        p = self.per
        device_noise = p.read_noise and p.read_noise_mode == "device"
        W = self._noisy_matrix() if device_noise else None
        std = p.read_noise if p.read_noise_mode == "output" else 0.0
        exact = std and p.noise_rng == "exact"
        levels = 2 ** (p.adc_bits - 1) - 1 if p.adc_bits is not None else 0
        ranges = self.bwd_range if transposed else self.fwd_range
        c = self.dtype.type
        if not (device_noise or exact or self._ir or self.probes):
            self._lines_into(v, out, c(gain), c(std), c(levels), ranges, transposed, assign)
            return
        if assign:
            out.fill(0.0)
        for ri, rt in enumerate(self.row_tiles):
            for ci, ct in enumerate(self.col_tiles):
                key = (rt.start, ct.start)
                if device_noise and self._ir:   # IR-drop operand plus this read's noise
                    dW = W[ct, rt] - self.W_eff[ct, rt]
                    fwd_op, bwd_op = self._fwd_tiles[key] + dW.T, self._bwd_tiles[key] + dW
                elif device_noise:
                    fwd_op, bwd_op = W[ct, rt].T, W[ct, rt]
                elif self._ir:
                    fwd_op, bwd_op = self._fwd_tiles[key], self._bwd_tiles[key]
                else:
                    fwd_op, bwd_op = self.W_eff[ct, rt].T, self.W_eff[ct, rt]
                if transposed:
                    part = v[:, ct] @ bwd_op
                    c0 = rt.start
                else:
                    part = v[:, rt] @ fwd_op
                    c0 = ct.start
                if exact:
                    part += (std * self.rng.standard_normal(part.shape)).astype(part.dtype)
                step = ranges[key] / levels if levels else 0.0
                args = (c(0.0 if exact else std), c(step), c(levels),
                        int(self.rng.integers(0, 2**62)))
                probe = self.probes.get((ri, ci)) if self.probes else None
                if probe is None:
                    sense_accumulate(out, c0, part, c(gain), *args)
                    continue
                # recorded tile: ADC output kept apart, then added like any other tile
                sensed = np.zeros_like(part)
                sense_accumulate(sensed, 0, part, c(1.0), *args)
                out[:, c0:c0 + part.shape[1]] += c(gain) * sensed
                n = probe.samples
                probe.record(transposed, part[:n] * self.current_factor(),
                             np.rint(sensed[:n] / step) if step else None)

    def _lines_into(self, v, out, gain, std, levels, ranges, transposed: bool,
                    assign: bool) -> None:
        """:meth:`_tiled_into` for the common case (output read noise from the fast
        generator, ideal wires, no recorded tile): one GEMM per driven tile row (forward) or
        tile column (transposed) over all the lines it senses, then one sense pass over all
        the read's tiles.  Same noise streams, tile ADC ranges and summation order as tile by
        tile."""
        c = self.dtype.type
        nr, nc = len(self.row_tiles), len(self.col_tiles)
        seeds = self.rng.integers(0, 2**62, nr * nc).reshape(nr, nc)  # = size (nr, nc)
        driven, sensed = ((self.col_tiles, self.row_tiles) if transposed else
                          (self.row_tiles, self.col_tiles))
        bounds = self._bounds[transposed]
        if transposed:
            seeds = np.ascontiguousarray(seeds.T)
        steps = self._steps.get((transposed, int(levels)))
        if steps is None:       # ADC steps (driven group, sensed tile)
            keys = [[(s.start, d.start) if transposed else (d.start, s.start) for s in sensed]
                    for d in driven]
            steps = self._steps[transposed, int(levels)] = np.array(
                [[ranges[k] / levels if levels else 0.0 for k in ks] for ks in keys], c)
        ops = ([self.W_eff[d, :] for d in driven] if transposed else self._fwd_rows)
        rows, n = out.shape
        # a large read runs its GEMMs and sense pass block by block of rows, so the partial
        # outputs stay in cache; the noise lanes carry over, so the samples are those of one
        # pass (a small read is one block)
        row_bytes = len(driven) * n * self.dtype.itemsize
        block = rows
        if rows * row_bytes > BLOCKED_READ_BYTES:
            block = max(16, SENSE_BLOCK_BYTES // row_bytes)
        lanes = self._lanes.get((transposed, n))
        if lanes is None:
            lanes = self._lanes[transposed, n] = np.empty((len(driven), n), np.uint32)
        if std > 0.0:
            seed_read_lanes(lanes, bounds, seeds)
        for r0 in range(0, rows, block):
            r1 = min(rows, r0 + block)
            parts = self._parts(len(driven), r1 - r0, n)
            for i, d in enumerate(driven):
                np.matmul(v[r0:r1, d], ops[i], out=parts[i])
            sense_rows(out[r0:r1], parts, bounds, gain, std, steps, levels, lanes, assign)

    def _parts(self, groups: int, rows: int, n: int) -> np.ndarray:
        """Scratch (groups, rows, n) for the partial outputs of a read, reused."""
        parts = self._part_buf.get((groups, rows, n))
        if parts is None:
            parts = self._part_buf[groups, rows, n] = np.empty((groups, rows, n), self.dtype)
        return parts

    def watch_tile(self, tile: tuple, probe) -> None:
        """Record the reads of tile (row tile, column tile): ``probe.record(transposed,
        current_A, adc_codes)`` after each read of it (``probe.samples`` rows)."""
        self.probes[tile] = probe

    def unwatch_tile(self, tile: tuple) -> None:
        self.probes.pop(tile, None)

    def current_factor(self) -> float:
        """Amperes of differential sensed current (I+ - I-, or I - I_ref for the reference
        column) per output unit (weight x state): inputs become voltages
        ``x v_read / input_range`` and weights conductances ``W (G_max - G_min) / S``
        (differential) or ``W (G_max - G_min) / (2 S)`` (reference)."""
        return float(self.mapping.S_per_weight * self.per.v_read_V / self.per.input_range)

    def _untiled(self) -> bool:
        """Reads that need no per-tile processing: ideal periphery, or device read noise only."""
        p = self.per
        if not self.wires.ideal:
            return False
        return p.ideal or (p.adc_bits is None and not (p.read_noise and
                                                       p.read_noise_mode == "output"))

    @property
    def exact_linear(self) -> bool:
        return self.ideal_reads

    def dense(self) -> np.ndarray:
        return self.W_eff

    def read_transposed_into(self, y: np.ndarray, out: np.ndarray, gain: float = 1.0,
                             accumulate: bool = False) -> np.ndarray:
        """Columns driven by y (B, n_out), rows sensed: ``out (+)= gain * read(y) ~ y @ W``."""
        return self.read_into(y, out, gain, accumulate, transposed=True)

    def read_into(self, v: np.ndarray, out: np.ndarray, gain: float = 1.0,
                  accumulate: bool = False, transposed: bool = False) -> np.ndarray:
        """``out (+)= gain * read(v)`` in place; out is C-contiguous in the compute dtype.

        Forward (``transposed=False``): rows driven by v (B, n_in), columns sensed, out
        (B, n_out) ~ v @ W^T.  Transposed: columns driven by v (B, n_out), rows sensed, out
        (B, n_in) ~ v @ W.  ``gain`` is the sense-amplifier gain applied after the ADC.
        """
        if self.per.input_scaling == "abs_max" and not self.ideal_reads:
            # the meter sees the scaled drive: the voltages the DAC actually applies
            return abs_max_read(lambda vs, part: self._plain_read(vs, part, gain, False,
                                                                  transposed),
                                v, out, self.per.input_range, accumulate)
        return self._plain_read(v, out, gain, accumulate, transposed)

    def _plain_read(self, v, out, gain, accumulate, transposed) -> np.ndarray:
        if self.observers:
            self.notify_read(v, transposed)
        vq = self._dac(v)
        if self._untiled():
            M = self._noisy_matrix()
            return gemm_into(vq, M if transposed else M.T, out, gain, accumulate)
        self._tiled_into(vq, out, gain, transposed, not accumulate)
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Rows driven by x (B, n_in), columns sensed: returns (B, n_out) ~ x @ W^T."""
        return self.read_into(x, np.empty((x.shape[0], self.n_out), self.dtype))

    def transposed(self, y: np.ndarray) -> np.ndarray:
        """Columns driven by y (B, n_out), rows sensed: returns (B, n_in) ~ y @ W."""
        return self.read_transposed_into(y, np.empty((y.shape[0], self.n_in), self.dtype))

    # ------------------------------------------------------------------ updates
    def pulse_counts(self, dW: np.ndarray, max_pulses: int | None = None) -> np.ndarray:
        """Deterministic scheme: signed pulse counts per device for a weight change dW,
        ``n = stochastic_round(dW / (device step in weight units))``, capped at ``max_pulses``.
        For a differential pair each device takes half the change, in opposite directions."""
        dW = np.ascontiguousarray(dW, dtype=float)
        n = np.empty(dW.shape, np.int64)
        _round_pulses(dW.reshape(-1), self.mapping.pulse_factor(),
                      -1 if max_pulses is None else int(max_pulses),
                      int(self.rng.integers(0, 2**62)), n.reshape(-1))
        return n

    def apply_update(self, dW: np.ndarray, max_pulses: int | None = None) -> int:
        """Change the stored weights by ~dW (weight units, (n_out, n_in)); returns the number
        of pulses fired (0 for the ideal device, which takes the exact change)."""
        if not self.card.pulsed:
            self.mapping.change_exact(self.mapping.device_change(dW))
            self.last_counts, self.last_program_J = None, 0.0
            self.refresh()
            return 0
        return self.write_pulses(self.pulse_counts(dW, max_pulses))

    def write_pulses(self, n: np.ndarray) -> int:
        """Fire the signed counts n (n_out, n_in) through the mapping (a differential pair's
        G- takes -n), keep them and their programming energy, refresh the read operands;
        returns the pulses fired.  An all-zero n touches no device (no write noise redrawn)
        and skips the refresh unless the clock moved on a drifting card since the last one."""
        self.last_counts = n
        if not n.any():
            self.last_program_J = 0.0
            if self._stale:
                self.refresh()
            return 0
        self.last_program_J = self.program_energy(n)
        fired = self.mapping.pulse(n)
        self.refresh()
        return fired

    def at_bound_fraction(self) -> float:
        return self.mapping.at_bound_fraction()

    # ------------------------------------------------------------------ operator protocol
    def update(self, pre: np.ndarray, delta: np.ndarray, scale: float) -> None:
        """In-situ EP update: the pulse rule turns ``lr * scale * delta.T @ pre`` (pre
        (B, n_in), delta (B, n_out)) into pulses; observers get the pulses fired, the
        programming energy and the signed counts.  The batch's simulated time
        (``seconds_per_update``) passes first; the refresh after the pulses shows the drift."""
        if self.seconds_per_update:
            for dev in (self.pos, self.neg):
                if dev is not None:
                    dev.advance(self.seconds_per_update)
            self._stale = self.pos.drifts    # the refresh after the pulses shows the drift
        if self.rule is None:
            g = scale * (np.asarray(delta).T @ np.asarray(pre))
            fired = self.apply_update(self.lr * g)
        else:
            fired = self.rule.apply(self, pre, delta, scale)
        self.notify_update({"pulses": fired, "program_J": self.last_program_J,
                            "counts": self.last_counts, **self.rule_info})

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass on the devices' clocks; with a drifting card
        the effective weights are recomputed (no work without drift)."""
        self.mapping.advance(seconds)
        if self.pos.drifts:
            self.refresh()

    def state_dict(self) -> dict:
        """Device states per side: ``{side}:w``, ``{side}:write_noise``, ``{side}:t_written``
        (flat arrays) and ``{side}:t_now`` (the clock, s, a 0-d array)."""
        out = {}
        for side, dev in self.mapping.arrays:
            out[f"{side}:w"] = dev.w
            out[f"{side}:write_noise"] = dev.write_noise
            out[f"{side}:t_written"] = dev.t_written
            out[f"{side}:t_now"] = np.array(dev.t_now)
        if hasattr(self.rule, "state_dict"):    # mixed precision, Tiki-Taka: rule:<key>
            out.update({f"rule:{k}": v for k, v in self.rule.state_dict(self).items()})
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a state without ``t_now`` (older checkpoints) keeps
        the clock at its time now."""
        for side, dev in self.mapping.arrays:
            np.copyto(dev.w, state[f"{side}:w"])
            dev.write_noise = np.array(state[f"{side}:write_noise"])
            np.copyto(dev.t_written, state[f"{side}:t_written"])
            if f"{side}:t_now" in state:
                dev.t_now = float(state[f"{side}:t_now"])
            dev.touch()
        if hasattr(self.rule, "load_state_dict"):
            self.rule.load_state_dict(self, {k[5:]: v for k, v in state.items()
                                             if k.startswith("rule:")})
        self.refresh(exact=True)

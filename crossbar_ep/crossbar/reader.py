"""The tiled reader of one crossbar array: tiles, converters, read noise, IR-drop operands,
ADC calibration and probes.

The reader holds the effective matrix ``W_eff`` (n_out, n_in) the devices encode (set by the
operator after every write or clock step, :meth:`TiledReader.set_weights`) and performs reads:
a forward read drives the rows (inputs) and senses the columns; the transposed read drives the
columns and senses the rows of the same tiles, giving W^T for the tied feedback path.  Each
tile's partial output passes its own read noise and ADC before the partial sums are added
digitally, as in tiled chips.  With ideal periphery the reads are exact products with
``W_eff`` and tiling changes nothing.

With wire resistance each tile's read operands are its effective maps from the nodal solve
(:class:`~crossbar_ep.circuit.ir_drop.TileIRDrop`), public through :meth:`TiledReader.operand`.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.circuit.ir_drop import TileIRDrop
from crossbar_ep.crossbar.converters import ADC, DAC
from crossbar_ep.crossbar.operand_kernels import transpose_blocked
from crossbar_ep.crossbar.periphery import (
    Periphery,
    abs_max_read,
    seed_read_lanes,
    sense_accumulate,
    sense_rows,
)
from crossbar_ep.model.operators import gemm_into

# A read whose partial outputs (driven groups x rows x sensed lines) exceed BLOCKED_READ_BYTES
# is done in blocks of rows of about SENSE_BLOCK_BYTES (half this machine's 1 MiB L2), so
# each block's GEMM output is sensed while it is still in cache (e.g. a dense net at batch
# 2000, or a conv kernel read with larger patch chunks than model/conv.py's).  Smaller reads
# (the dense nets' 2 x 500 x 512 at batch 500, conv reads in 2 MiB patch chunks) run faster
# as whole GEMMs.
SENSE_BLOCK_BYTES = 512 * 1024
BLOCKED_READ_BYTES = 4 << 20


def forward_rows(W_eff: np.ndarray, row_tiles) -> list:
    """The forward read operands per driven tile row: ``W_eff[:, rt].T`` (rows, n_out),
    C-contiguous (BLAS runs a transposed-strided operand about 1.4x slower on 2 threads),
    as row blocks of one blocked transpose."""
    WT = transpose_blocked(W_eff)
    return [WT[rt] for rt in row_tiles]


class TiledReader:
    """Reads of one array through its tiles and periphery.

    ``mapping`` (:mod:`crossbar_ep.crossbar.mapping`) supplies the physical tile layout, the
    per-read device noise and the current scale; ``rng`` draws the read noise."""

    def __init__(self, tiling, mapping, periphery: Periphery, wires, iv,
                 rng: np.random.Generator, dtype):
        self.tiling, self.mapping, self.rng = tiling, mapping, rng
        self.wires, self.iv, self.dtype = wires, iv, np.dtype(dtype)
        self.n_out, self.n_in = tiling.n_out, tiling.n_in
        self.set_converters(periphery)
        self._part_buf, self._lanes = {}, {}
        self.probes: dict = {}   # (row tile, col tile) -> traces probe recording that tile
        # per tile: the nodal IR-drop solver (wire resistance only)
        self.circuits = ({} if wires.ideal else
                         {key: TileIRDrop(wires, mapping.name, mapping.weight_per_S)
                          for key in tiling.keys()})
        self._tile_ops: dict = {}   # key -> (forward (rows, cols), transposed (cols, rows))
        self.W_eff = None

    def set_converters(self, periphery: Periphery) -> None:
        self.per = periphery
        self.dac = DAC(periphery, self.iv, self.dtype)
        self.adc = ADC(periphery, self.dtype)

    # ------------------------------------------------------------------ operands
    @property
    def has_wires(self) -> bool:
        """Wire resistance: the reads see each tile's nodal effective maps."""
        return bool(self.circuits)

    @property
    def ideal(self) -> bool:
        """Every read is an exact product with W_eff (ideal periphery, wires and I-V law)."""
        return self.per.ideal and self.wires.ideal and self.iv.linear

    def set_weights(self, W: np.ndarray, gp: np.ndarray, gn, exact: bool) -> None:
        """New effective matrix W (n_out, n_in) from conductances gp, gn (S): the per-tile read
        operands (with IR drop: an exact nodal solve every ``wires.refresh_every`` calls or
        when ``exact``, first order in between) and the ADC full scales."""
        self.W_eff = np.ascontiguousarray(W, dtype=self.dtype)
        t, m = self.tiling, self.mapping
        if self.circuits:
            ops = self._tile_ops = {}
            for rt in t.row_tiles:
                for ct in t.col_tiles:
                    key = (rt.start, ct.start)
                    G = m.physical_tile(gp[ct, rt], None if gn is None else gn[ct, rt])
                    fwd, bwd = self.circuits[key].weights(G, exact)
                    ops[key] = (np.ascontiguousarray(fwd, dtype=self.dtype),
                                np.ascontiguousarray(bwd, dtype=self.dtype))
            self.adc.calibrate(t, self.W_eff, ops)
            return
        self.adc.calibrate(t, self.W_eff)
        self._fwd_rows = forward_rows(self.W_eff, t.row_tiles)

    def apply_gain(self, W: np.ndarray, gain: np.ndarray) -> None:
        """Fold a digital output gain (n_out,) into the operands set by :meth:`set_weights`
        from the raw matrix W: ``W_eff = gain[:, None] * W`` and the tiles' operands scaled
        alike (no new nodal solve); the ADC full scales follow."""
        self.W_eff = np.ascontiguousarray(W * gain[:, None], dtype=self.dtype)
        t = self.tiling
        if self.circuits:
            for rt in t.row_tiles:
                for ct in t.col_tiles:
                    key = (rt.start, ct.start)
                    fwd, bwd = self._tile_ops[key]
                    self._tile_ops[key] = (
                        np.ascontiguousarray(fwd * gain[None, ct], dtype=self.dtype),
                        np.ascontiguousarray(bwd * gain[ct, None], dtype=self.dtype))
            self.adc.calibrate(t, self.W_eff, self._tile_ops)
            return
        self.adc.calibrate(t, self.W_eff)
        self._fwd_rows = forward_rows(self.W_eff, t.row_tiles)

    def calibrate(self) -> None:
        """Recalibrate the ADC full scales (after a change of periphery)."""
        self.adc.calibrate(self.tiling, self.W_eff, self._tile_ops if self.circuits else None)

    def operand(self, key: tuple, transposed: bool) -> np.ndarray:
        """The matrix a tile's read multiplies by (before noise and ADC): forward (tile inputs,
        tile outputs), transposed (tile outputs, tile inputs); with wire resistance the
        tile's effective map, else the block of W_eff."""
        if self.circuits:
            return self._tile_ops[key][1 if transposed else 0]
        r0, c0 = key
        t = self.tiling
        rt = next(s for s in t.row_tiles if s.start == r0)
        ct = next(s for s in t.col_tiles if s.start == c0)
        block = self.W_eff[ct, rt]
        return block if transposed else block.T

    def ir_drop_deviation(self) -> tuple[float, float]:
        """(sum of squares of W_read - W_eff over the forward tile operands, sum of squares of
        W_eff): how far IR drop moves the weights the reads see from the programmed ones."""
        if not self.circuits:
            return 0.0, float(np.sum(self.W_eff.astype(float) ** 2))
        dev = 0.0
        for rt in self.tiling.row_tiles:
            for ct in self.tiling.col_tiles:
                d = self._tile_ops[(rt.start, ct.start)][0] - self.W_eff[ct, rt].T
                dev += float(np.sum(d.astype(float) ** 2))
        return dev, float(np.sum(self.W_eff.astype(float) ** 2))

    def current_factor(self) -> float:
        """Amperes of differential sensed current (I+ - I-, or I - I_ref for the reference
        column) per output unit (weight x state): inputs become voltages
        ``x v_read / input_range`` and weights conductances ``W (G_max - G_min) / S``
        (differential) or ``W (G_max - G_min) / (2 S)`` (reference)."""
        return float(self.mapping.S_per_weight * self.per.v_read_V / self.per.input_range)

    # ------------------------------------------------------------------ reads
    def read(self, v: np.ndarray, out: np.ndarray, gain: float, accumulate: bool,
             transposed: bool, notify=None) -> np.ndarray:
        """``out (+)= gain * read(v)`` in place; out is C-contiguous in the compute dtype.

        Forward (``transposed=False``): rows driven by v (B, n_in), columns sensed, out
        (B, n_out) ~ v @ W^T.  Transposed: columns driven by v (B, n_out), rows sensed, out
        (B, n_in) ~ v @ W.  ``gain`` is the sense-amplifier gain applied after the ADC;
        ``notify(v, transposed)`` is called with the drive the DAC applies (observers)."""
        if self.per.input_scaling == "abs_max" and not self.ideal:
            # the meter sees the scaled drive: the voltages the DAC actually applies
            return abs_max_read(lambda vs, part: self._plain_read(vs, part, gain, False,
                                                                  transposed, notify),
                                v, out, self.per.input_range, accumulate)
        return self._plain_read(v, out, gain, accumulate, transposed, notify)

    def _plain_read(self, v, out, gain, accumulate, transposed, notify) -> np.ndarray:
        if notify is not None:
            notify(v, transposed)
        vq = self.dac.drive(v)
        if self._untiled():
            M = self._noisy_matrix()
            return gemm_into(vq, M if transposed else M.T, out, gain, accumulate)
        self._tiled_into(vq, out, gain, transposed, not accumulate)
        return out

    def _untiled(self) -> bool:
        """Reads that need no per-tile processing: ideal periphery, or device read noise only."""
        p = self.per
        if not self.wires.ideal:
            return False
        return p.ideal or (p.adc_bits is None and not (p.read_noise and
                                                       p.read_noise_mode == "output"))

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
        levels = self.adc.levels
        c = self.dtype.type
        if not (device_noise or exact or self.circuits or self.probes):
            self._lines_into(v, out, c(gain), c(std), c(levels), transposed, assign)
            return
        if assign:
            out.fill(0.0)
        for ri, rt in enumerate(self.tiling.row_tiles):
            for ci, ct in enumerate(self.tiling.col_tiles):
                key = (rt.start, ct.start)
                if device_noise and self.circuits:   # IR-drop operand plus this read's noise
                    dW = W[ct, rt] - self.W_eff[ct, rt]
                    fwd_op = self._tile_ops[key][0] + dW.T
                    bwd_op = self._tile_ops[key][1] + dW
                elif device_noise:
                    fwd_op, bwd_op = W[ct, rt].T, W[ct, rt]
                elif self.circuits:
                    fwd_op, bwd_op = self._tile_ops[key]
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
                step = self.adc.step(key, transposed)
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

    def _lines_into(self, v, out, gain, std, levels, transposed: bool, assign: bool) -> None:
        """:meth:`_tiled_into` for the common case (output read noise from the fast
        generator, ideal wires, no recorded tile): one GEMM per driven tile row (forward) or
        tile column (transposed) over all the lines it senses, then one sense pass over all
        the read's tiles.  Same noise streams, tile ADC ranges and summation order as tile by
        tile."""
        t = self.tiling
        nr, nc = len(t.row_tiles), len(t.col_tiles)
        seeds = self.rng.integers(0, 2**62, nr * nc).reshape(nr, nc)  # = size (nr, nc)
        driven, _ = t.driven_sensed(transposed)
        bounds = t.bounds[transposed]
        if transposed:
            seeds = np.ascontiguousarray(seeds.T)
        steps = self.adc.steps(t, transposed)
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

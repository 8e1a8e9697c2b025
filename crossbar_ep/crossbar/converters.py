"""The converters of one crossbar array: the input DAC (with the devices' I-V law at the drive
voltage) and the per-tile output ADCs with their calibrated full scales.

Units: inputs and outputs in state units (the network's), ``input_range`` the DAC full scale;
an ADC full scale is in output units (weight x state) per tile and read direction.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.crossbar.periphery import Periphery, dac_kernel


def levels_of(bits: int | None) -> int:
    """Levels per sign of a signed converter, ``2^(bits-1) - 1``; 0 for an ideal one."""
    return 2 ** (bits - 1) - 1 if bits is not None else 0


class DAC:
    """Input DAC of every driven line: clip to +-input_range and round to ``input_range /
    levels`` (none with ``dac_bits: null``); :meth:`drive` adds the device I-V law."""

    def __init__(self, periphery: Periphery, iv, dtype):
        self.per, self.iv, self.dtype = periphery, iv, np.dtype(dtype)
        self.bits = periphery.dac_bits
        self.levels = levels_of(self.bits)
        self._buf: dict = {}

    @property
    def step(self) -> float:
        """Input step (state units), 0 for an ideal DAC."""
        return self.per.input_range / self.levels if self.levels else 0.0

    def convert(self, x: np.ndarray) -> np.ndarray:
        """DAC(x) (B, n), in a buffer reused per shape (a read consumes it before returning);
        x itself for an ideal DAC."""
        if self.bits is None:
            return x
        out = self._buf.get(x.shape)
        if out is None:
            out = self._buf[x.shape] = np.empty(x.shape, self.dtype)
        c = self.dtype.type
        dac_kernel(np.ascontiguousarray(x), out, c(self.per.input_range / self.levels),
                   c(self.levels))
        return out

    def drive(self, x: np.ndarray) -> np.ndarray:
        """Drive of a read in input units: DAC(x), then the device I-V law at the drive
        voltage, ``f(DAC(x) k) / k`` with k = v_read / input_range volts per unit (exact with
        ideal wires: every device sees its line's drive voltage; odd f keeps the
        differential pair's +-V symmetric)."""
        q = self.convert(x)
        if self.iv.linear:
            return q
        k = self.per.v_read_V / self.per.input_range
        return (self.iv.f(np.asarray(q) * k) / k).astype(self.dtype, copy=False)


class ADC:
    """Output ADCs of every tile: one full scale per tile and read direction (``ranges[False]``
    forward, ``ranges[True]`` transposed, keyed by tile key), fixed (``adc_range``) or
    calibrated to ``adc_sigmas`` standard deviations of the tile output for inputs uniform on
    the input range (std = range x rms column norm / sqrt 3)."""

    def __init__(self, periphery: Periphery, dtype):
        self.per, self.dtype = periphery, np.dtype(dtype)
        self.bits = periphery.adc_bits
        self.levels = levels_of(self.bits)
        self.ranges: dict = {False: None, True: None}
        self._steps: dict = {}

    def calibrate(self, tiling, W_eff: np.ndarray, operands: dict | None = None) -> None:
        """Set the full scales from the effective matrix W_eff (n_out, n_in), or from the
        per-tile read operands the reads see (``operands[key] = (forward (rows, cols),
        transposed (cols, rows))``, with IR drop)."""
        p = self.per
        self._steps = {}
        if p.adc_bits is None:
            self.ranges = {False: None, True: None}
            return
        W2 = W_eff.astype(float) ** 2
        s = p.input_range / np.sqrt(3.0)
        fwd_range, bwd_range = {}, {}
        for rt in tiling.row_tiles:
            for ct in tiling.col_tiles:
                key = (rt.start, ct.start)
                if p.adc_range is not None:
                    f = b = p.adc_range
                elif operands:   # the matrices the reads actually see
                    fo, bo = operands[key]
                    f = p.adc_sigmas * s * np.sqrt((fo.astype(float) ** 2).sum(axis=0).max())
                    b = p.adc_sigmas * s * np.sqrt((bo.astype(float) ** 2).sum(axis=0).max())
                else:
                    f = p.adc_sigmas * s * np.sqrt(W2[ct, rt].sum(axis=1).max())
                    b = p.adc_sigmas * s * np.sqrt(W2[ct, rt].sum(axis=0).max())
                fwd_range[key] = max(f, 1e-12)
                bwd_range[key] = max(b, 1e-12)
        self.ranges = {False: fwd_range, True: bwd_range}

    def step(self, key: tuple, transposed: bool) -> float:
        """ADC step of one tile and direction (output units), 0 for an ideal ADC."""
        return self.ranges[transposed][key] / self.levels if self.levels else 0.0

    def steps(self, tiling, transposed: bool) -> np.ndarray:
        """ADC steps (driven group, sensed tile) of one read direction in the compute dtype,
        computed once per calibration."""
        levels = self.levels
        steps = self._steps.get((transposed, levels))
        if steps is None:
            driven, sensed = tiling.driven_sensed(transposed)
            keys = [[(s.start, d.start) if transposed else (d.start, s.start) for s in sensed]
                    for d in driven]
            ranges = self.ranges[transposed]
            steps = self._steps[transposed, levels] = np.array(
                [[ranges[k] / levels if levels else 0.0 for k in ks] for ks in keys],
                self.dtype.type)
        return steps

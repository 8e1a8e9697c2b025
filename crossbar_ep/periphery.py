"""Crossbar periphery: input DACs, per-tile ADCs and read noise, as a frozen settings object
and the fused Numba kernels the reads use (each with a plain NumPy equivalent in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from . import fastrng


@dataclass(frozen=True)
class Periphery:
    """Converters and read noise (all optional; ``None`` bits means ideal).

    dac_bits: input DAC resolution (signed, 2^(bits-1) - 1 levels per sign).
    input_range: inputs are clipped to [-input_range, input_range] (state units).
    v_read_V: read voltage for full-scale input (V); enters currents and energy only.
    t_read_s: duration of one read (s); e_dac_J / e_adc_J: energy per conversion (J).
    adc_bits: output ADC resolution per tile (signed).
    adc_range: fixed ADC full scale in output units (weight x state), or None to calibrate
        ``adc_sigmas`` standard deviations of the tile output for full-range random inputs.
    read_noise: std of the read noise, in output units per tile (mode 'output') or relative
        to each device's conductance (mode 'device'); redrawn at every read.
    noise_rng: 'fast' (counter-based near-Gaussian, :mod:`crossbar_ep.fastrng`) or 'exact'
        (NumPy's Gaussian) for output read noise.
    """

    dac_bits: int | None = None
    input_range: float = 1.0
    v_read_V: float = 0.2
    t_read_s: float = 1e-8
    e_dac_J: float = 0.0
    e_adc_J: float = 0.0
    adc_bits: int | None = None
    adc_range: float | None = None
    adc_sigmas: float = 4.0
    read_noise: float = 0.0
    read_noise_mode: str = "output"
    noise_rng: str = "fast"

    @property
    def ideal(self) -> bool:
        return self.dac_bits is None and self.adc_bits is None and self.read_noise == 0.0


def quantize(x: np.ndarray, bits: int | None, full_scale, out: np.ndarray | None = None):
    """Signed uniform quantiser: clip to [-full_scale, full_scale], round to
    2^(bits-1) - 1 levels per sign.  ``full_scale`` may broadcast against x."""
    if bits is None:
        if out is None:
            return x
        np.copyto(out, x)
        return out
    levels = 2 ** (bits - 1) - 1
    step = np.asarray(full_scale, dtype=x.dtype) / levels
    y = np.clip(x, -step * levels, step * levels, out=out)
    np.divide(y, step, out=y)
    np.rint(y, out=y)
    np.multiply(y, step, out=y)
    return y


@numba.njit(cache=True, fastmath=True)
def sense_accumulate(out, c0, part, gain, noise_std, step, levels, seed):
    """out[:, c0:c0+n] += gain * ADC(part + noise): one fused pass over a tile's output
    ``part`` (B, n) into the layer's C-contiguous buffer ``out`` (B, n_layer).

    noise_std > 0 adds Gaussian read noise from per-column lane streams of ``seed``
    (:func:`crossbar_ep.fastrng.lane_normal`); step > 0 clips to +-levels steps and rounds to
    the step; ``gain`` is the sense-amplifier gain (beta_i on feedback reads).
    """
    n = part.shape[1]
    s0 = np.empty(n, np.uint64)
    s1 = np.empty(n, np.uint64)
    lim = step * levels
    inv = np.float32(1.0) / step if step > 0.0 else np.float32(0.0)
    gstep = gain * step
    if noise_std > 0.0:
        fastrng.seed_lanes(fastrng.key(seed), s0, s1)
    for b in range(part.shape[0]):
        row_in, row_out = part[b], out[b, c0:c0 + n]
        if noise_std > 0.0 and step > 0.0:
            for j in range(n):
                v = row_in[j] + noise_std * fastrng.lane_normal(s0, s1, j)
                v = min(max(v, -lim), lim)
                row_out[j] += np.rint(v * inv) * gstep
        elif noise_std > 0.0:
            for j in range(n):
                row_out[j] += gain * (row_in[j] + noise_std * fastrng.lane_normal(s0, s1, j))
        elif step > 0.0:
            for j in range(n):
                v = min(max(row_in[j], -lim), lim)
                row_out[j] += np.rint(v * inv) * gstep
        else:
            for j in range(n):
                row_out[j] += gain * row_in[j]


@numba.njit(cache=True, fastmath=True)
def dac_kernel(x, out, step, levels):
    """out = DAC(x): clip to +-levels steps and round to the step, in one pass (C-contiguous,
    out of the compute dtype)."""
    lim = step * levels
    inv = 1.0 / step
    fx, fo = x.reshape(-1), out.reshape(-1)
    for i in range(fx.size):
        v = min(max(fx[i], -lim), lim)
        fo[i] = np.rint(v * inv) * step

"""Crossbar periphery: input DACs, per-tile ADCs and read noise, as a frozen settings object
and the fused Numba kernels the reads use (each with a plain NumPy equivalent in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from crossbar_ep import fastrng
from crossbar_ep.schema import key, p_choice, p_float, p_int, p_optional


@dataclass(frozen=True)
class Periphery:
    """Converters and read noise of every tile (all optional; ``None`` bits means ideal).

    This dataclass is also the ``crossbar.periphery`` config section: each field's metadata
    holds its unit, range and documentation (``docs/config.md`` is generated from it).
    """

    dac_bits: int | None = key(None, "Input DAC resolution, signed (2^(bits-1) - 1 levels per "
                               "sign); null for an ideal DAC.", p_optional(p_int(lo=2, hi=24)),
                               "bits")
    input_range: float = key(1.0, "DAC full scale: inputs are clipped to +-input_range.",
                             p_float(lo=1.0e-6, hi=1.0e6), "state units")
    v_read_V: float = key(0.2, "Read voltage at full-scale input.",
                          p_float(lo=1.0e-6, hi=1.0e3), "V")
    t_read_s: float = key(1.0e-8, "Duration of one array read (the drive pulse): array "
                          "read energy = V^T Y V x t_read.", p_float(lo=1.0e-15, hi=1.0), "s")
    e_dac_J: float = key(0.0, "Energy per DAC conversion (one driven line, one sample); "
                         "0 leaves converters out of the energy.", p_float(lo=0.0, hi=1.0), "J")
    e_adc_J: float = key(0.0, "Energy per ADC conversion (one sensed output of one tile, one "
                         "sample).", p_float(lo=0.0, hi=1.0), "J")
    adc_bits: int | None = key(None, "Output ADC resolution per tile, signed; null for ideal.",
                               p_optional(p_int(lo=2, hi=24)), "bits")
    adc_range: float | None = key(None, "Fixed ADC full scale in output units (weight x "
                                  "state); null to calibrate it per tile.",
                                  p_optional(p_float(lo=1.0e-12, hi=1.0e12)), "weight x state")
    adc_sigmas: float = key(4.0, "Calibration rule: full scale = this many standard "
                            "deviations of the tile output for uniform full-range inputs.",
                            p_float(lo=0.0, hi=1.0e3, lo_open=True), "std")
    read_noise: float = key(0.0, "Read noise std, redrawn at every read: in output units per "
                            "tile (mode output) or relative to each conductance (mode device).",
                            p_float(lo=0.0, hi=1.0e3), "output units or G")
    read_noise_mode: str = key("output", "output (additive on each tile output) or device "
                               "(proportional to G on each device).",
                               p_choice("output", "device"))
    noise_rng: str = key("fast", "Output read-noise generator: fast (counter-based sum of 8 "
                         "uniforms: variance 1, kurtosis 2.85, bounded at 4.9 sigma; ~9x faster) "
                         "or exact (NumPy's Gaussian).", p_choice("fast", "exact"))

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
    """out[:, c0:c0+n] += gain * ADC(part + noise): one tile's output ``part`` (B, n) into the
    layer's buffer ``out`` (B, n_layer) (:func:`sense_tiles` for a single tile).

    noise_std > 0 adds Gaussian read noise from per-column lane streams of ``seed``
    (:func:`crossbar_ep.fastrng.lane_normal32`); step > 0 clips to +-levels
    steps and rounds to the step; ``gain`` is the sense-amplifier gain (beta_i on feedback reads).
    """
    n = part.shape[1]
    steps = np.empty(1, part.dtype)
    steps[0] = step
    seeds = np.empty(1, np.int64)
    seeds[0] = seed
    sense_tiles(out[:, c0:c0 + n], part, np.array([0, n]), gain, noise_std, steps, levels,
                seeds, False)


@numba.njit(cache=True, fastmath=True)
def sense_tiles(out, part, bounds, gain, noise_std, steps, levels, seeds, assign):
    """Every tile of one read at once: ``out (+)= gain * ADC(part + noise)`` where ``part``
    (B, n) holds the partial outputs of one driven tile row (or column) for all n sensed
    lines, and tile t owns lines ``bounds[t]:bounds[t+1]`` with ADC step ``steps[t]`` and
    noise stream ``seeds[t]`` (one 32-bit lane per sensed line,
    :func:`crossbar_ep.fastrng.lane_normal32`, one sample per row).  Tile by tile this is
    exactly :func:`sense_accumulate` (same lane streams, same arithmetic); one call and one
    GEMM replace one per tile.  ``assign`` writes instead of adding (the first partial sum of
    a read).  Each case is its own loop over the lanes, so each vectorises.
    """
    for t in range(bounds.size - 1):
        a, b = bounds[t], bounds[t + 1]
        lanes = np.empty(b - a, np.uint32)
        nz = np.empty(b - a, part.dtype)
        noisy = noise_std > 0.0
        if noisy:
            fastrng.seed_lanes32(fastrng.key(seeds[t]), lanes)
        step = steps[t]
        lim = step * levels
        inv = np.float32(1.0) / step if step > 0.0 else np.float32(0.0)
        gstep = gain * step
        for r in range(part.shape[0]):
            x, y = part[r, a:b], out[r, a:b]
            if noisy and step > 0.0:          # noise first, in a loop of its own: the
                for j in range(x.size):       # fused loop does not vectorise
                    nz[j] = x[j] + noise_std * fastrng.lane_normal32(lanes, j)
                if assign:
                    for j in range(x.size):
                        y[j] = np.rint(min(max(nz[j], -lim), lim) * inv) * gstep
                else:
                    for j in range(x.size):
                        y[j] += np.rint(min(max(nz[j], -lim), lim) * inv) * gstep
            elif noisy:
                if assign:
                    for j in range(x.size):
                        y[j] = gain * (x[j] + noise_std * fastrng.lane_normal32(lanes, j))
                else:
                    for j in range(x.size):
                        y[j] += gain * (x[j] + noise_std * fastrng.lane_normal32(lanes, j))
            elif step > 0.0:
                if assign:
                    for j in range(x.size):
                        y[j] = np.rint(min(max(x[j], -lim), lim) * inv) * gstep
                else:
                    for j in range(x.size):
                        y[j] += np.rint(min(max(x[j], -lim), lim) * inv) * gstep
            elif assign:
                for j in range(x.size):
                    y[j] = gain * x[j]
            else:
                for j in range(x.size):
                    y[j] += gain * x[j]


@numba.njit(cache=True, fastmath=True)
def dac_kernel(x, out, step, levels):
    """out = DAC(x): clip to +-levels steps and round to the step, in one pass (C-contiguous,
    out of the compute dtype)."""
    lim = step * levels
    inv = np.float32(1.0) / step      # in the dtype of step: a float64 literal halves the speed
    fx, fo = x.reshape(-1), out.reshape(-1)
    for i in range(fx.size):
        v = min(max(fx[i], -lim), lim)
        fo[i] = np.rint(v * inv) * step

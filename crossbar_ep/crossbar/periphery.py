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
                            "deviations of the tile output for uniform full-range inputs, "
                            "re-calibrated after every update; outputs beyond it are "
                            "clipped.  Saturated tanh states drive larger outputs than "
                            "uniform inputs (docs/studies/adc_full_scale.md).",
                            p_float(lo=0.0, hi=1.0e3, lo_open=True), "std")
    read_noise: float = key(0.0, "Read noise std, redrawn at every read: in output units per "
                            "tile (mode output) or relative to each conductance (mode device).",
                            p_float(lo=0.0, hi=1.0e3), "output units or G")
    read_noise_mode: str = key("output", "output (additive on each tile output) or device "
                               "(proportional to G on each device).",
                               p_choice("output", "device"))
    input_scaling: str = key("none", "Per-read input scaling (the noise management of Gokmen, "
                             "Onen & Haensch 2017): none, or abs_max (each input vector is "
                             "divided by its largest magnitude over input_range before the DAC, so "
                             "it spans the DAC's full scale, and the sensed output is "
                             "multiplied back digitally: small vectors such as an output "
                             "error keep the DAC's resolution, and their read noise and ADC "
                             "step shrink with them).", p_choice("none", "abs_max"))
    noise_rng: str = key("fast", "Output read-noise generator: fast (counter-based sum of 8 "
                         "uniforms: variance 1, kurtosis 2.85, bounded at 4.9 sigma; ~9x faster) "
                         "or exact (NumPy's Gaussian).", p_choice("fast", "exact"))

    @property
    def ideal(self) -> bool:
        return self.dac_bits is None and self.adc_bits is None and self.read_noise == 0.0


def abs_max_read(read, v: np.ndarray, out: np.ndarray, input_range: float,
                 accumulate: bool) -> np.ndarray:
    """Noise management: each row of v (B, n) divided by ``a = max_j |v_ij| / input_range``
    (1 for an all-zero row) so it spans the DAC full scale, read by ``read(v_scaled, part)``
    (which fills ``part``, shaped like ``out``), and ``out (+)= a[:, None] * part``: the
    sensed output, its read noise and its ADC step scaled back digitally."""
    a = np.abs(v).max(axis=1) * (1.0 / input_range)
    a[a == 0.0] = 1.0
    a = a.astype(out.dtype, copy=False)[:, None]
    part = read(np.divide(v, a, dtype=out.dtype), np.empty_like(out))
    if accumulate:
        part *= a
        out += part
    else:
        np.multiply(part, a, out=out)
    return out


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
    steps = np.empty((1, 1), part.dtype)
    steps[0, 0] = step
    seeds = np.empty((1, 1), np.int64)
    seeds[0, 0] = seed
    sense_tiles(out[:, c0:c0 + n], part.reshape(1, part.shape[0], n), np.array([0, n]), gain,
                noise_std, steps, levels, seeds, False)


@numba.njit(cache=True)
def seed_read_lanes(lanes, bounds, seeds):
    """Seed the read-noise lanes of one read: ``lanes[i, j]`` (uint32, (R, n)) is the 32-bit
    stream of driven group i's partial output on sensed line j, from the stream
    ``seeds[i, t]`` of the tile t owning line j (lines ``bounds[t]:bounds[t+1]``)."""
    for i in range(seeds.shape[0]):
        for t in range(bounds.size - 1):
            fastrng.seed_lanes32(fastrng.key(seeds[i, t]), lanes[i, bounds[t]:bounds[t + 1]])


@numba.njit(cache=True, fastmath=True)
def sense_tiles(out, parts, bounds, gain, noise_std, steps, levels, seeds, assign):
    """Every tile of one read at once: ``out (+)= gain * sum_i ADC(parts[i] + noise)`` where
    ``parts[i]`` (B, n) holds the partial outputs of driven tile row (or column) i for all n
    sensed lines, and tile (i, t) owns lines ``bounds[t]:bounds[t+1]`` with ADC step
    ``steps[i, t]`` and noise stream ``seeds[i, t]`` (one 32-bit lane per sensed line,
    :func:`crossbar_ep.fastrng.lane_normal32`, one sample per row).  The partial sums are
    added in the order i = 0, 1, ... to each output row while it sits in L1 cache: exactly
    :func:`sense_accumulate` tile by tile (same lane streams, arithmetic and order), in one
    pass over ``out``.  ``assign`` writes instead of adding (the read's first partial sum).
    """
    lanes = np.empty((parts.shape[0], parts.shape[2]), np.uint32)
    if noise_std > 0.0:
        seed_read_lanes(lanes, bounds, seeds)
    sense_rows(out, parts, bounds, gain, noise_std, steps, levels, lanes, assign)


@numba.njit(cache=True, fastmath=True)
def sense_rows(out, parts, bounds, gain, noise_std, steps, levels, lanes, assign):
    """:func:`sense_tiles` on rows of a read whose noise lanes (:func:`seed_read_lanes`)
    are already seeded; the lanes advance in place, so a read sensed in blocks of rows, one
    call per block in row order, draws exactly the samples of one call on all rows.
    Each case is its own loop over the lanes, so each vectorises."""
    R = parts.shape[0]
    noisy = noise_std > 0.0
    for t in range(bounds.size - 1):
        a, b = bounds[t], bounds[t + 1]
        nz = np.empty(b - a, parts.dtype)
        lim = np.empty(R, parts.dtype)
        inv = np.empty(R, parts.dtype)
        gstep = np.empty(R, parts.dtype)
        for i in range(R):
            step = steps[i, t]
            lim[i] = step * levels
            inv[i] = np.float32(1.0) / step if step > 0.0 else np.float32(0.0)
            gstep[i] = gain * step
        for r in range(parts.shape[1]):
            y = out[r, a:b]
            for i in range(R):
                x, ln, first = parts[i, r, a:b], lanes[i, a:b], assign and i == 0
                lo, hi, iv, gs = -lim[i], lim[i], inv[i], gstep[i]
                adc = steps[i, t] > 0.0
                src = x
                if noisy and adc:                 # noise first, in a loop of its own: the
                    for j in range(x.size):       # fused loop does not vectorise
                        nz[j] = x[j] + noise_std * fastrng.lane_normal32(ln, j)
                    src = nz
                if adc:
                    if first:
                        for j in range(x.size):
                            y[j] = np.rint(min(max(src[j], lo), hi) * iv) * gs
                    else:
                        for j in range(x.size):
                            y[j] += np.rint(min(max(src[j], lo), hi) * iv) * gs
                elif noisy:
                    if first:
                        for j in range(x.size):
                            y[j] = gain * (x[j] + noise_std * fastrng.lane_normal32(ln, j))
                    else:
                        for j in range(x.size):
                            y[j] += gain * (x[j] + noise_std * fastrng.lane_normal32(ln, j))
                elif first:
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

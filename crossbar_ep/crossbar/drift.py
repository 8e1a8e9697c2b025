"""Drift compensation in the periphery: a digital gain on the sensed outputs that undoes the
mean conductance decay of power-law drift (global drift compensation, Joshi et al., Nat.
Commun. 11, 2473 (2020), and its per-column variant).

A calibration read drives every row of an array with the same voltage and senses every
physical column (G+ and G- columns separately, their currents added): its response is the
column conductance sum ``s_j = sum_i (G+_ij + G-_ij)`` (``sum_i G_ij`` for the reference
mapping).  The periphery records the response of the devices as written (a calibration read
right after programming or pulsing them) and, at every later read, scales output j by
``alpha = s_written / s_now``:

- ``global``: one factor for the whole matrix, ``sum_j s_written_j / sum_j s_now_j``;
- ``column``: one factor per output column.

The gain is digital (after the ADC): it costs no array energy and scales the read noise and
ADC steps along with the signal.  For a differential pair with one drift exponent the
compensation is exact; device-to-device spreads of nu leave a residual.
"""

from __future__ import annotations

import numpy as np

DRIFT_COMPENSATION = ("none", "global", "column")


def compensation_gain(mapping, mode: str):
    """Output gain (n_out,) undoing the drift since the devices were written, or None when
    ``mode`` is ``none`` or the devices do not drift."""
    if mode not in DRIFT_COMPENSATION:
        raise ValueError(f"drift compensation {mode!r}: use {', '.join(DRIFT_COMPENSATION)}")
    arrays = [dev for _, dev in mapping.arrays]
    if mode == "none" or not arrays[0].drifts:
        return None
    now = sum(dev.conductance().sum(axis=1) for dev in arrays)
    written = sum(dev.conductance(drifted=False).sum(axis=1) for dev in arrays)
    if mode == "global":
        return np.full(now.shape, written.sum() / max(now.sum(), 1e-300))
    return written / np.maximum(now, 1e-300)

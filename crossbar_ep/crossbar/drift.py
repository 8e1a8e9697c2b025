"""Drift compensation a chip can do: a digital gain on the sensed outputs computed from
calibration reads (global drift compensation, Joshi et al., Nat. Commun. 11, 2473 (2020), and
its per-column variant).

A calibration read drives the array's rows with stored reference vectors (the first
:data:`CALIBRATION_VECTORS` non-constant rows of a Walsh-Hadamard matrix: +-input_range
patterns known to the periphery) through the normal read path (DAC, read noise, ADC; its energy
and conversions are metered like any read's) and sums the magnitudes of each output line's
responses, ``c_j = sum_k |r_kj|``.  The periphery records ``c_j`` right after programming (the
reference) and, at every later time the devices' clock has moved, reads them again and scales
output j by

- ``global``: one factor for the whole matrix, ``sum_j c_ref_j / sum_j c_now_j``;
- ``column``: one factor per output line, ``c_ref_j / c_now_j`` (1 where c_now_j is 0).

Only what the reads measured enters the gain: where devices were rewritten since the
reference was recorded, their change counts like drift (call
:meth:`~crossbar_ep.crossbar.array.CrossbarMatrix.calibrate` after reprogramming to record a
new reference).  The gain is digital (after the ADC): it costs no array energy and scales
the read noise and ADC steps along with the signal.  For a differential pair whose devices
share one drift exponent the compensation is exact.
"""

from __future__ import annotations

import numpy as np

DRIFT_COMPENSATION = ("none", "global", "column")
CALIBRATION_VECTORS = 16


def reference_inputs(n_in: int, input_range: float, k: int = CALIBRATION_VECTORS,
                     dtype=np.float64) -> np.ndarray:
    """The calibration read's inputs (k, n_in): rows 1..k of the Sylvester-Hadamard matrix,
    ``H[r, j] = (-1)^popcount(r & j)``, times ``input_range`` (state units)."""
    j = np.arange(n_in)
    rows = np.empty((k, n_in), dtype)
    for r in range(1, k + 1):
        parity = np.zeros(n_in, np.int64)
        v = r & j
        while v.any():
            parity ^= v & 1
            v >>= 1
        rows[r - 1] = np.where(parity == 1, -input_range, input_range)
    return rows


def column_response(outputs: np.ndarray) -> np.ndarray:
    """``c_j = sum_k |r_kj|`` (n_out,) of a calibration read's outputs (k, n_out), float64."""
    return np.abs(np.asarray(outputs, float)).sum(axis=0)


def compensation_gain(mode: str, reference: np.ndarray, response: np.ndarray):
    """The output gain (n_out,) for a calibration ``response`` against the ``reference``
    recorded after programming, or None for mode ``none``."""
    if mode not in DRIFT_COMPENSATION:
        raise ValueError(f"drift compensation {mode!r}: use {', '.join(DRIFT_COMPENSATION)}")
    if mode == "none":
        return None
    if mode == "global":
        now = response.sum()
        return np.full(response.shape, reference.sum() / now if now > 0 else 1.0)
    gain = np.ones(response.shape)
    ok = response > 0
    gain[ok] = reference[ok] / response[ok]
    return gain


class DriftCompensation:
    """The compensation unit of one array's periphery: the mode, the reference recorded after
    programming (``reference``, (n_out,), None until recorded) and the count of calibration
    input vectors read (``reads``)."""

    def __init__(self, mode: str = "none"):
        self.mode = "none"
        self.set_mode(mode)
        self.reference = None
        self.reads = 0
        self._reported = 0

    def set_mode(self, mode: str) -> None:
        if mode not in DRIFT_COMPENSATION:
            raise ValueError(f"drift compensation {mode!r}: use "
                             f"{', '.join(DRIFT_COMPENSATION)}")
        self.mode = mode

    def measure(self, reader, notify=None) -> np.ndarray:
        """One calibration read through ``reader`` (a
        :class:`~crossbar_ep.crossbar.reader.TiledReader` holding the raw operands): the
        reference inputs read forward with the periphery (``notify`` sees the drive, so the
        read is metered like any other; probes do not record it); returns ``c`` (n_out,)."""
        R = reference_inputs(reader.n_in, reader.per.input_range, CALIBRATION_VECTORS,
                             reader.dtype)
        out = np.empty((R.shape[0], reader.n_out), reader.dtype)
        probes, reader.probes = reader.probes, {}
        try:
            reader.read(R, out, 1.0, False, False, notify)
        finally:
            reader.probes = probes
        self.reads += R.shape[0]
        return column_response(out)

    def gain(self, response: np.ndarray) -> np.ndarray:
        """The output gain for a calibration response (the first one after a reset of the
        reference becomes the reference: gain 1)."""
        if self.reference is None:
            self.reference = response
        return compensation_gain(self.mode, self.reference, response)

    def take_reads(self) -> int:
        """Calibration vectors read since the last call (the updates report them)."""
        n, self._reported = self.reads - self._reported, self.reads
        return n

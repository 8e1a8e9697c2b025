"""Mixed-precision in-situ updates (Nandakumar et al., Front. Neurosci. 14, 406, 2020).

A digital accumulator ``chi`` per device (n_out, n_in), in weight units, integrates the EP
update ``lr * scale * delta.T @ pre`` at full precision; a device is pulsed only when its
accumulator passes the device's nominal step ``eps`` (weight units, ``1 / pulse_factor``):
``n = trunc(chi / eps)`` pulses (capped at ``max_pulses``), and the accumulator keeps the
remainder ``chi - n eps``.  Small updates therefore add up instead of being rounded away or
left to stochastic rounding, at the cost of one digital word per device and no pulse unless
the accumulated change is a whole step.
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar_ep.crossbar.array import CrossbarMatrix
from crossbar_ep.crossbar.pulses import DeterministicPulses


@numba.njit(cache=True)
def accumulate_pulses(chi, g, factor, cap, out):
    """chi += g; out = trunc(chi * factor) clipped to +-cap (cap < 0: no cap);
    chi -= out / factor.  Flat arrays; returns (the number of pulses |out| summed, the sum of
    chi^2 after the step)."""
    total = 0
    sq = 0.0
    for i in range(chi.size):
        c = chi[i] + g[i]
        n = np.int64(c * factor)          # truncation toward zero
        if cap >= 0:
            n = min(max(n, -cap), cap)
        c -= n / factor
        chi[i] = c
        sq += c * c
        out[i] = n
        total += abs(n)
    return total, sq


class MixedPrecision(DeterministicPulses):
    """Pulse rule with a per-device digital accumulator (``rule:chi`` in the array's state,
    float64 weight units); the ideal (exact-update) card takes the exact change."""

    schemes = ("mixed_precision",)

    def attach(self, cb: CrossbarMatrix) -> None:
        """Create the array's accumulator (zero)."""
        cb.rule_state["chi"] = np.zeros((cb.n_out, cb.n_in))

    def apply(self, cb: CrossbarMatrix, pre: np.ndarray, delta: np.ndarray,
              scale: float) -> int:
        if not cb.card.pulsed:
            return super().apply(cb, pre, delta, scale)
        chi = cb.rule_state["chi"]
        g = np.matmul(delta.T, pre)       # in the signals' dtype, like the digital update
        g *= cb.lr * scale
        n = np.empty(chi.shape, np.int64)
        _, sq = accumulate_pulses(chi.reshape(-1), g.reshape(-1), cb.mapping.pulse_factor(),
                          -1 if self.max_pulses is None else int(self.max_pulses),
                          n.reshape(-1))
        cb.last_counts = n
        cb.last_program_J = cb.program_energy(n)
        fired = cb.mapping.pulse(n)
        cb.rule_info = {"accumulator_rms": float(np.sqrt(sq / chi.size))}
        cb.refresh()
        return fired

    def state_dict(self, cb: CrossbarMatrix) -> dict:
        return {"chi": cb.rule_state["chi"]}

    def load_state_dict(self, cb: CrossbarMatrix, state: dict) -> None:
        np.copyto(cb.rule_state["chi"], state["chi"])

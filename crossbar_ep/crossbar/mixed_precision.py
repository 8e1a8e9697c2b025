"""Mixed-precision in-situ updates (Nandakumar et al., Front. Neurosci. 14, 406, 2020).

A digital accumulator ``chi`` per device (n_out, n_in), in weight units, integrates the EP
update ``lr * scale * delta.T @ pre`` at full precision; a device is pulsed only when its
accumulator passes the device's nominal step ``eps`` (weight units, ``1 / pulse_factor``):
``n = trunc(chi / eps)`` pulses (capped at ``max_pulses``), and the accumulator keeps the
remainder ``chi - n eps``.  Small updates therefore add up instead of being rounded away or
left to stochastic rounding, at the cost of one digital word per device and no pulse unless
the accumulated change is a whole step.

``crossbar.update.threshold`` theta > 1 fires only once ``|chi| >= theta eps`` (a dead
zone): an accumulator driven by noise of either sign crosses +-theta eps about theta^2 times
less often and fires about theta pulses each time, so theta times fewer pulses, while a
steady drift fires as many pulses as before, in bursts.

With ``crossbar.update.momentum`` mu > 0 the digital unit also keeps a velocity per device,
``v = mu v + lr * scale * delta.T @ pre``, and the accumulator integrates ``v`` instead: SGD
with momentum computed digitally, the weights still changed only by pulses (on the ideal card
exactly the digital SGD-momentum run).
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar_ep.crossbar.pulses import DeterministicPulses


@numba.njit(cache=True)
def accumulate_pulses(chi, g, factor, cap, out, threshold=1.0):
    """chi += g; out = trunc(chi * factor), zero where |chi * factor| < threshold, clipped
    to +-cap (cap < 0: no cap); chi -= out / factor.  Flat arrays; returns (the number of
    pulses |out| summed, the sum of chi^2 after the step)."""
    total = 0
    sq = 0.0
    for i in range(chi.size):
        c = chi[i] + g[i]
        n = np.int64(c * factor)          # truncation toward zero
        if abs(c * factor) < threshold:   # the dead zone (threshold 1: none beyond trunc)
            n = 0
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

    def create_state(self) -> None:
        """The array's accumulator (and velocity, with momentum), zero."""
        cb = self.array
        self.state["chi"] = np.zeros((cb.n_out, cb.n_in))
        if self.settings.momentum > 0:
            self.state["v"] = np.zeros((cb.n_out, cb.n_in), cb.dtype)

    def _velocity(self, g: np.ndarray) -> np.ndarray:
        """g itself, or with momentum the updated velocity mu v + g."""
        v = self.state.get("v")
        if v is None:
            return g
        v *= v.dtype.type(self.settings.momentum)
        v += g
        return v

    def apply(self, pre: np.ndarray, delta: np.ndarray, scale: float) -> dict:
        cb = self._bound()
        if not cb.card.pulsed and "v" not in self.state:
            return super().apply(pre, delta, scale)
        g = np.matmul(delta.T, pre)       # in the signals' dtype, like the digital update
        g *= cb.lr * scale
        g = self._velocity(g)
        if not cb.card.pulsed:            # the exact-update card takes the velocity itself
            cb.apply_update(g, self.max_pulses)
            return self.record()
        chi = self.state["chi"]
        n = np.empty(chi.shape, np.int64)
        _, sq = accumulate_pulses(chi.reshape(-1), g.reshape(-1), cb.mapping.pulse_factor(),
                                  -1 if self.max_pulses is None else int(self.max_pulses),
                                  n.reshape(-1), float(self.settings.threshold))
        self.info = {"accumulator_rms": float(np.sqrt(sq / chi.size))}
        cb.write_pulses(n)
        return self.record()

    def state_dict(self) -> dict:
        return {k: self.state[k] for k in ("chi", "v") if k in self.state}

    def load_state_dict(self, state: dict) -> None:
        for k in ("chi", "v"):
            if k in self.state:
                np.copyto(self.state[k], state[k])

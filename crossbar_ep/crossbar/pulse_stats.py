"""Pulse statistics of the crossbar operators: an observer of their updates."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _add_abs(acc, n):
    for i in range(acc.size):
        acc[i] += abs(n[i])


class PulseStats:
    """Observer of the crossbar operators' updates: pulses, updates and programming energy
    per array, optional per-device pulse totals; holds the devices' rng for checkpoints."""

    def __init__(self, crossbars: dict, rng: np.random.Generator):
        self.crossbars, self.rng = crossbars, rng
        self._names = {id(cb): name for name, cb in crossbars.items()}
        self.stats: dict = {}
        self._device_totals = None  # name -> pulses per device since track_devices(True)

    def on_read(self, op, v, transposed) -> None:
        pass

    def on_update(self, cb, info: dict) -> None:
        name = self._names.get(id(cb))
        if name is None:        # a copy of the arrays (copy.deepcopy): index them again
            self._names = {id(c): n for n, c in self.crossbars.items()}
            name = self._names[id(cb)]
        counts = info.get("counts")
        if self._device_totals is not None and counts is not None:
            tot = self._device_totals.get(name)
            if tot is None:
                tot = self._device_totals[name] = np.zeros(counts.shape, np.int32)
            _add_abs(tot.reshape(-1), counts.reshape(-1))
        s = self.stats.setdefault(name, {"pulses": 0, "updates": 0, "program_J": 0.0})
        s["pulses"] += info["pulses"]
        s["program_J"] += info["program_J"]
        s["updates"] += 1
        for k, v in info.items():     # a rule's own statistics (mixed precision, Tiki-Taka)
            if k not in ("pulses", "program_J", "counts") and isinstance(v, (int, float)):
                s[k] = v if k.endswith(("_rms", "_at_bound")) else s.get(k, 0) + v

    @property
    def last_counts(self) -> dict:
        """Signed pulse counts (n_out, n_in) of each array's last update (pulsed cards)."""
        return {k: cb.last_counts for k, cb in self.crossbars.items()
                if cb.last_counts is not None}

    def track_devices(self, on: bool) -> None:
        """Start (or stop) summing |pulses| per device over updates."""
        self._device_totals = {} if on else None

    def take_device_totals(self) -> dict:
        """Pulses per device (int32, (n_out, n_in)) since tracking started; resets them."""
        out = self._device_totals or {}
        if self._device_totals is not None:
            self._device_totals = {}
        return out

    def take_stats(self) -> dict:
        """Pulses and updates per projection since the last call, and the fraction of its
        devices now at a bound (``at_bound``)."""
        out, self.stats = self.stats, {}
        for name, s in out.items():
            cb = self.crossbars[name]
            s["at_bound"] = cb.at_bound_fraction()
            if cb.rule is not None:            # e.g. the Tiki-Taka fast array's bounds
                s.update(cb.rule.stats())
        return out


PulseUpdater = PulseStats  # the name older code and notebooks used

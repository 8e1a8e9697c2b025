"""Pulse rules: how a crossbar array turns the local EP signals of an update into pulses.

A rule is bound to ONE array (:meth:`PulseRule.bind`; setting ``array.rule`` binds it) and owns
what it keeps for that array (a digital accumulator, a fast array, a buffer: its ``state``,
saved under ``rule:<key>`` in the array's state dict) and the statistics of its last update
(``info``).  :meth:`PulseRule.apply` fires the pulses through the array's write methods and
returns the update's record: ``pulses`` fired, ``program_J`` (programming energy, J),
``counts`` (signed counts (n_out, n_in) of the array's devices, or None) and the rule's own
statistics.  A rule object handed to a second array is copied (same settings and generator),
so the rules of several arrays never share state.

Shipped rules: :class:`DeterministicPulses`, :class:`StochasticCoincidence` (here),
:class:`~crossbar_ep.crossbar.mixed_precision.MixedPrecision`,
:class:`~crossbar_ep.crossbar.tiki_taka.TikiTaka`; by scheme name in
:mod:`crossbar_ep.crossbar.rules`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from crossbar_ep.crossbar.coincidence import (  # noqa: F401  (re-exported)
    binomial_reference,
    bit_streams,
    coincidence_counts,
    coincidences,
)
from crossbar_ep.crossbar.pulse_stats import PulseStats, PulseUpdater  # noqa: F401
from crossbar_ep.crossbar.update_settings import UpdateSettings


class DeterministicPulses:
    """Pulse rule: ``n = stochastic_round(lr * scale * delta.T @ pre / step)`` pulses per
    device (a differential pair splits them), capped at ``max_pulses``; the ideal device takes
    the exact change.

    Every rule reads its parameters from ``settings`` (:class:`UpdateSettings`, the
    ``crossbar.update`` section; keyword overrides replace its fields, the scheme defaults to
    the class's first), draws from ``rng`` and names the ``schemes`` it implements."""

    schemes: tuple = ("deterministic",)

    def __init__(self, settings: UpdateSettings | None = None,
                 rng: np.random.Generator | None = None, **overrides):
        s = settings if settings is not None else UpdateSettings(scheme=self.schemes[0])
        self.settings = replace(s, **overrides) if overrides else s
        if self.settings.scheme not in self.schemes:
            raise ValueError(f"{type(self).__name__} implements {', '.join(self.schemes)}, "
                             f"not {self.settings.scheme!r}")
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.array = None          # the array this rule is bound to
        self.state: dict = {}      # what the rule keeps for its array (rule:<key> in the state)
        self.info: dict = {}       # the rule's own statistics of the last update

    @property
    def max_pulses(self) -> int | None:
        return self.settings.max_pulses

    # ------------------------------------------------------------------ binding
    def bind(self, array) -> "DeterministicPulses":
        """This rule bound to ``array`` (creating its per-array state), or, when it is
        already bound to another array, a copy of it (same settings and generator) bound to
        ``array``."""
        if self.array is array:
            return self
        if self.array is not None:
            return type(self)(self.settings, self.rng).bind(array)
        self.array = array
        self.create_state()
        return self

    def attach(self, array) -> None:
        """Older spelling of ``array.rule = rule`` (a no-op when ``array`` already holds
        this rule or a copy of it)."""
        if array.rule is None or array.rule.array is not array:
            array.rule = self

    def create_state(self) -> None:
        """Create the per-array state (accumulators, fast arrays) for ``self.array``."""

    def _bound(self):
        if self.array is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to an array: set "
                               f"array.rule = rule (or rule.bind(array)) first")
        return self.array

    # ------------------------------------------------------------------ the update
    def apply(self, pre: np.ndarray, delta: np.ndarray, scale: float) -> dict:
        """Pulses for the update ``array.lr * scale * delta.T @ pre`` (pre (B, n_in), delta
        (B, n_out)); returns the update's record (module doc)."""
        cb = self._bound()
        g = np.matmul(delta.T, pre)
        g *= scale
        cb.apply_update(cb.lr * g, self.max_pulses)
        return self.record()

    def record(self) -> dict:
        """The array's last write with this rule's statistics."""
        return {**self.array.last_write, **self.info}

    def stats(self) -> dict:
        """Statistics of the rule's own state for the epoch metrics (none here)."""
        return {}

    def state_dict(self) -> dict:
        """The rule's per-array state (name -> ndarray)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""

    def optional_state(self) -> set:
        """Keys of :meth:`state_dict` an older checkpoint may lack."""
        return set()


PulseRule = DeterministicPulses     # the base every rule subclasses


class StochasticCoincidence(DeterministicPulses):
    """Pulse rule of Gokmen & Vlasov (2016): stochastic bit streams on rows and columns, a
    device steps where they coincide (:func:`coincidence_counts`); the ideal device falls back
    to the exact change.  ``bl`` and ``update_management`` from the settings."""

    schemes = ("stochastic",)

    def apply(self, pre, delta, scale):
        cb = self._bound()
        if not cb.card.pulsed:
            return super().apply(pre, delta, scale)
        s = self.settings
        n = coincidence_counts(cb, pre, delta, cb.lr * scale * pre.shape[0], s.bl,
                               s.update_management, self.rng)
        cb.write_pulses(n)
        return self.record()

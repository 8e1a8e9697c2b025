"""When a settling phase has converged (``settling.early_stop``).

``absolute``: the largest state change per tau over all neurons falls below ``tolerance``
(state units).  ``relative``: every layer k's largest change per tau falls below ``tolerance``
times the gain with which the nudge reaches it (``g_k = beta_f beta_i^hops`` on a chain; the
strongest walk on any graph, :func:`crossbar_ep.model.normalisation.path_gains`), in both
phases, and a nudged phase runs at least one step per layer.  EP's signal at layer k is the
nudged-minus-free displacement, of order g_k: far below any absolute tolerance that suits the
top layer (beta_f 1e-5 at layer 1 of a chain of 6 with beta_i 0.1), so an absolute rule stops
the free phase with a drift larger than the lower layers' signal and the nudged phase before
the nudge reaches them.  The relative rule settles each layer to ``tolerance`` of its signal.
"""

from __future__ import annotations

MODES = ("absolute", "relative")


class PhaseStop:
    """Stopping rule of one phase: ``start`` when it begins, ``layer`` after each layer's step
    (its max |ds| per tau), ``settled`` once per step.  ``gains``: layer -> nudge gain
    (relative mode; layers without one use 1); ``min_steps``: nudged steps before a stop."""

    def __init__(self, tolerance: float, mode: str = "absolute", min_steps: int = 0,
                 gains: dict | None = None):
        if mode not in MODES:
            raise ValueError(f"tolerance mode {mode!r}: use one of {', '.join(MODES)}")
        self.tol, self.mode, self.min_steps = float(tolerance), mode, int(min_steps)
        self.gains = dict(gains or {})
        self.ok, self.first = True, 0

    def start(self, nudged: bool) -> None:
        """A phase begins."""
        self.ok, self.first = True, (self.min_steps if nudged else 0)

    def layer(self, k, resid: float) -> None:
        if self.mode == "relative" and self.ok:
            self.ok = resid < self.tol * self.gains.get(k, 1.0)

    def settled(self, resid: float, steps: int) -> bool:
        """Whether the phase may stop after ``steps`` steps whose largest residual was
        ``resid``; resets the per-step layer verdict."""
        if self.mode == "absolute":
            return resid < self.tol
        ok, self.ok = self.ok and steps >= self.first, True
        return ok

"""Knowledge distillation targets for auxiliary heads (Hinton et al. 2015 soft targets).

A teacher (the project's BP twin, any object with ``predict(x) -> p`` (B, n_out)) is run once
per batch; each auxiliary head is nudged toward ``(1 - mix) y + mix softmax(z_T / tau)``
while the main readout keeps the label.  ``softmax(log p_T / tau) = softmax(z_T / tau)``
(softmax is shift-invariant), so the teacher's probabilities suffice.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.model.settle import softmax


class LogitDistiller:
    """Callable ``(x, y1h) -> {head index: target}`` for ``EPLearner.targets``."""

    def __init__(self, teacher, heads, readout: int, tau: float = 4.0, mix: float = 0.5):
        self.teacher, self.heads, self.readout = teacher, list(heads), int(readout)
        self.tau, self.mix = float(tau), float(mix)

    def soft_targets(self, x: np.ndarray) -> np.ndarray:
        """Teacher's temperature-softened distribution (B, n_out)."""
        p = self.teacher.predict(x)
        z = np.log(np.maximum(p, 1e-300)) / self.tau
        return softmax(z)

    def __call__(self, x: np.ndarray, y1h: np.ndarray) -> dict:
        t = ((1.0 - self.mix) * y1h + self.mix * self.soft_targets(x)).astype(y1h.dtype)
        out = {e: t for e in self.heads}
        out[self.readout] = y1h
        return out


class FeatureDistiller:
    """Callable ``(x, y1h) -> {head index: target}``: each feature-hint head on layer l is
    nudged toward the teacher's hidden state of its layer ``teacher_layer[e]`` (FitNets hints,
    Romero et al. 2015); the teacher (a BP twin, ``forward(x) -> (s, h, p)``) runs once per
    batch."""

    def __init__(self, teacher, teacher_layer: dict, readout: int):
        self.teacher, self.teacher_layer, self.readout = teacher, dict(teacher_layer), readout

    def __call__(self, x: np.ndarray, y1h: np.ndarray) -> dict:
        s = self.teacher.forward(x)[0]
        out = {e: np.ascontiguousarray(s[k], dtype=y1h.dtype)
               for e, k in self.teacher_layer.items()}
        out[self.readout] = y1h
        return out


__all__ = ["LogitDistiller", "FeatureDistiller"]

"""Per-layer learning-signal diagnostics of EP (intermediate-error-signal papers' plots):
the mean |s_nudged - s_free| of every hidden layer and the mean |dW| of every trained
projection (the update direction the learner applies, after batch averaging and
normalisation, before the learning rate), averaged over the batches of an epoch."""

from __future__ import annotations

import numpy as np


class LayerStats:
    """Observer an :class:`~crossbar_ep.model.learners.EPLearner` calls once per batch with
    ``delta`` (layer -> s_nudged - s_free, (B, n_k); head index -> error) and ``local``
    (projection -> (pre (B, n_src), post (B, n_dst), scale))."""

    def __init__(self, L: int):
        self.L = L
        self.reset()

    def reset(self) -> None:
        self._ds: dict = {}
        self._dw: dict = {}
        self._n = 0

    def observe(self, delta: dict, local: dict) -> None:
        for k in range(1, self.L + 1):
            self._ds[k] = self._ds.get(k, 0.0) + float(np.abs(delta[k]).mean())
        for name, (pre, post, scale) in local.items():
            # mean |post^T pre| * scale, without forming the matrix twice per element
            dw = float(np.abs(post.T @ pre).mean()) * scale
            self._dw[name] = self._dw.get(name, 0.0) + dw
        self._n += 1

    def take(self) -> dict:
        """{'layer_ds': [mean |ds| of layer 1..L], 'layer_dw': {name: mean |dW|}} over the
        batches seen since the last take (then reset)."""
        n = max(self._n, 1)
        out = {"layer_ds": [self._ds.get(k, 0.0) / n for k in range(1, self.L + 1)],
               "layer_dw": {name: v / n for name, v in self._dw.items()}}
        self.reset()
        return out


__all__ = ["LayerStats"]

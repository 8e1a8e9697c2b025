"""Hardware-aware digital training: weight noise injected for each batch's phases.

For every training batch the digital matrices read during the free and nudged phases are
``W + noise``, with per-weight standard deviation

    sigma(W) = add * max|W| + mul * |W| + scale * sigma_card(W),

``sigma_card`` the programming noise a card would give those weights (a function the builder
derives from ``training.weight_noise_card``: the card's programming-noise law through the
differential-pair mapping).  The local updates are computed from the noisy phases and applied
to the clean weights (as in noise-injection training for analog inference: Joshi et al.,
Nat. Commun. 2020).  The draws for the batch of optimiser step t come from the generator
``(seed, t)``, so a resumed run draws the same noise.
"""

from __future__ import annotations

import numpy as np


class WeightNoise:
    """Per-batch noise on the trained digital matrices of a network.  ``additive``: std as a
    fraction of each matrix's max |W|; ``multiplicative``: std relative to each |W|;
    ``sigma_card``: None or name -> callable(W (n_out, n_in)) -> std (weight units), scaled
    by ``scale``."""

    def __init__(self, seed: int, additive: float = 0.0, multiplicative: float = 0.0,
                 sigma_card: dict | None = None, scale: float = 1.0):
        self.seed, self.add, self.mul = int(seed), float(additive), float(multiplicative)
        self.sigma_card, self.scale = sigma_card or {}, float(scale)
        self._clean: dict = {}

    @property
    def active(self) -> bool:
        return bool(self.add or self.mul or (self.sigma_card and self.scale))

    def sigma(self, name: str, W: np.ndarray) -> np.ndarray:
        """Per-weight standard deviation (weight units) of matrix ``name``."""
        s = np.zeros(W.shape)
        if self.add:
            s += self.add * float(np.abs(W).max())
        if self.mul:
            s += self.mul * np.abs(W)
        f = self.sigma_card.get(name)
        if f is not None and self.scale:
            s += self.scale * f(W)
        return s

    def perturb(self, net, step: int) -> None:
        """Add this batch's noise to every trained digital matrix (kept clean aside)."""
        from crossbar_ep.model.operators import DigitalMatrix
        rng = np.random.default_rng([self.seed, int(step)])
        self._clean = {}
        for p in net.projections:
            op = net.ops[p.name]
            if not isinstance(op, DigitalMatrix) or not op.trainable:
                continue
            self._clean[p.name] = op.W.copy()
            noise = self.sigma(p.name, op.W) * rng.standard_normal(op.W.shape)
            op.W += noise.astype(op.W.dtype)
            op.changed()

    def restore(self, net) -> None:
        """Put the clean matrices back (before the updates are applied)."""
        for name, W in self._clean.items():
            op = net.ops[name]
            np.copyto(op.W, W)
            op.changed()
        self._clean = {}

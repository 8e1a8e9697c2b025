"""Optimisers acting in place on parameter arrays, in the ascent convention of EP.

``step(name, update, gscale)`` adds ``lr * f(update * gscale)`` to the parameter, where
``update`` points downhill on the loss (minus the gradient), as EP's local rule does.
``weight_decay`` (set after construction, default 0): Adam decays decoupled (AdamW,
``w *= 1 - lr wd`` before the step), SGD adds the L2 term (``update - wd w``).
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.model import kernels


class Optimizer:
    def __init__(self, params: list, lrs: dict):
        self.params = dict(params)
        self.lrs = dict(lrs)
        self.t = 0
        self.state: dict = {}
        self.weight_decay = 0.0

    def begin(self) -> None:
        """Start one update of all parameters (advances the step counter)."""
        self.t += 1

    def state_arrays(self) -> dict:
        return {f"{slot}:{name}": a for name, slots in self.state.items()
                for slot, a in slots.items()}

    def load_state_arrays(self, arrays: dict, t: int) -> None:
        self.t = t
        for key, a in arrays.items():
            slot, name = key.split(":", 1)
            np.copyto(self.state[name][slot], a)


class Adam(Optimizer):
    def __init__(self, params, lrs, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params, lrs)
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.state = {n: {"m": np.zeros_like(p), "v": np.zeros_like(p)}
                      for n, p in self.params.items()}

    def step(self, name: str, update: np.ndarray, gscale: float = 1.0) -> None:
        st = self.state[name]
        bc1 = 1.0 - self.b1 ** self.t
        bc2 = np.sqrt(1.0 - self.b2 ** self.t)
        lr_t = self.lrs[name] * bc2 / bc1
        if self.weight_decay:
            p = self.params[name]
            p *= p.dtype.type(1.0 - self.lrs[name] * self.weight_decay)
        kernels.adam_step(self.params[name], update, st["m"], st["v"], float(gscale),
                          float(lr_t), self.b1, self.b2, float(self.eps * bc2))


class SGD(Optimizer):
    def __init__(self, params, lrs, momentum=0.0):
        super().__init__(params, lrs)
        self.mu = momentum
        self.state = {n: {"buf": np.zeros_like(p)} for n, p in self.params.items()}

    def step(self, name: str, update: np.ndarray, gscale: float = 1.0) -> None:
        if self.weight_decay:
            p = self.params[name]
            update = update * p.dtype.type(gscale) - p.dtype.type(self.weight_decay) * p
            gscale = 1.0
        kernels.sgd_step(self.params[name], update, self.state[name]["buf"], float(gscale),
                         float(self.lrs[name]), self.mu)

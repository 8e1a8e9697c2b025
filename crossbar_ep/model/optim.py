"""Optimisers acting in place on parameter arrays, in the ascent convention of EP.

``step(name, update, gscale)`` adds ``lr * f(update * gscale)`` to the parameter, where
``update`` points downhill on the loss (minus the gradient), as EP's local rule does.
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
        kernels.adam_step(self.params[name], update, st["m"], st["v"], float(gscale),
                          float(lr_t), self.b1, self.b2, float(self.eps * bc2))


class SGD(Optimizer):
    def __init__(self, params, lrs, momentum=0.0):
        super().__init__(params, lrs)
        self.mu = momentum
        self.state = {n: {"buf": np.zeros_like(p)} for n, p in self.params.items()}

    def step(self, name: str, update: np.ndarray, gscale: float = 1.0) -> None:
        kernels.sgd_step(self.params[name], update, self.state[name]["buf"], float(gscale),
                         float(self.lrs[name]), self.mu)

"""Weight operators: everything the network multiplies by.

A weight operator holds one matrix ``W`` of shape (n_out, n_in) and is read two ways:

- forward, ``out (+)= gain * v @ W.T`` with v (B, n_in), out (B, n_out);
- transposed, ``out (+)= gain * y @ W`` with y (B, n_out), out (B, n_in) (a feedback or nudge
  path reading the same array with the roles of rows and columns swapped).

It learns from local signals only: :meth:`WeightOperator.update` takes the pre-synaptic
activity ``pre`` (B, n_in), the post-synaptic change ``delta`` (B, n_out) (nudged minus free
state, or the output error) and a scale, and moves ``W`` by about
``scale * delta.T @ pre`` (the ascent convention: downhill on the loss).

The settle loop, the learners, diagnostics, traces and energy talk to operators through this
protocol only.  Operators whose reads are exact linear maps (``exact_linear``) let the settle
loop stack their :meth:`dense` views into one GEMM per layer; ``version`` changes whenever the
matrix changes, so no copy of a weight can go stale.
"""

from __future__ import annotations

import numpy as np


class WeightOperator:
    """The protocol (and shared bookkeeping) of every weight operator.

    Subclasses set ``n_out``, ``n_in``, ``dtype`` and implement the reads, :meth:`dense`,
    :meth:`update` and the state dict.  ``observers`` receive ``on_read(op, v, transposed)``
    for every read (energy meters) and ``on_update(op, info)`` after every update (pulse
    statistics); an operator read through a stacked GEMM is reported by the settle loop via
    :meth:`notify_read`.
    """

    n_out: int
    n_in: int
    dtype: np.dtype
    trainable: bool = True
    exact_linear: bool = True

    def __init__(self) -> None:
        self.version = 0
        self.observers: list = []

    # ------------------------------------------------------------------ protocol
    @property
    def shape(self) -> tuple:
        return (self.n_out, self.n_in)

    def dense(self) -> np.ndarray:
        """The effective matrix W (n_out, n_in) the reads realise (exactly, if exact_linear)."""
        raise NotImplementedError

    def read_into(self, v: np.ndarray, out: np.ndarray, gain: float = 1.0,
                  accumulate: bool = False) -> np.ndarray:
        """Forward read: ``out (+)= gain * v @ W.T``; v (B, n_in), out (B, n_out)."""
        raise NotImplementedError

    def read_transposed_into(self, y: np.ndarray, out: np.ndarray, gain: float = 1.0,
                             accumulate: bool = False) -> np.ndarray:
        """Transposed read: ``out (+)= gain * y @ W``; y (B, n_out), out (B, n_in)."""
        raise NotImplementedError

    def update(self, pre: np.ndarray, delta: np.ndarray, scale: float) -> None:
        """Learn from local signals: move W by about ``scale * delta.T @ pre``."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """name -> ndarray (or JSON-able value) of everything needed to restore the operator."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared helpers
    def changed(self) -> None:
        """Mark the matrix as changed (stacked copies of it must be rebuilt)."""
        self.version += 1

    def notify_read(self, v: np.ndarray, transposed: bool = False) -> None:
        for obs in self.observers:
            obs.on_read(self, v, transposed)

    def notify_update(self, info: dict) -> None:
        for obs in self.observers:
            hook = getattr(obs, "on_update", None)
            if hook is not None:
                hook(self, info)

    def read(self, v: np.ndarray) -> np.ndarray:
        """Forward read into a new array (B, n_out)."""
        return self.read_into(v, np.empty((v.shape[0], self.n_out), self.dtype))

    def read_transposed(self, y: np.ndarray) -> np.ndarray:
        """Transposed read into a new array (B, n_in)."""
        return self.read_transposed_into(y, np.empty((y.shape[0], self.n_in), self.dtype))


def gemm_into(a: np.ndarray, b: np.ndarray, out: np.ndarray, gain: float,
               accumulate: bool) -> np.ndarray:
    """out (+)= gain * a @ b, without a temporary when it can."""
    if not accumulate and gain == 1.0:
        return np.matmul(a, b, out=out)
    part = a @ b
    if gain != 1.0:
        part *= out.dtype.type(gain)
    if accumulate:
        out += part
    else:
        np.copyto(out, part)
    return out


class DigitalMatrix(WeightOperator):
    """An ideal digital weight matrix: exact reads, updates through an optimiser.

    ``W`` is the live array (n_out, n_in); ``optimizer`` (any object with
    ``step(key, update)``, see :mod:`crossbar_ep.model.optim`) applies the update under ``key``.
    Without an optimiser (or with ``trainable=False``, e.g. fixed random feedback) the matrix
    never changes.
    """

    def __init__(self, W: np.ndarray, key: str = "", optimizer=None, trainable: bool = True):
        super().__init__()
        self.W = np.ascontiguousarray(W)
        self.n_out, self.n_in = self.W.shape
        self.dtype = self.W.dtype
        self.key, self.optimizer, self.trainable = key, optimizer, trainable
        self._g = None

    def dense(self) -> np.ndarray:
        return self.W

    def read_into(self, v, out, gain=1.0, accumulate=False):
        if self.observers:
            self.notify_read(v, False)
        return gemm_into(v, self.W.T, out, gain, accumulate)

    def read_transposed_into(self, y, out, gain=1.0, accumulate=False):
        if self.observers:
            self.notify_read(y, True)
        return gemm_into(y, self.W, out, gain, accumulate)

    def local_gradient(self, pre: np.ndarray, delta: np.ndarray, scale: float) -> np.ndarray:
        """``scale * delta.T @ pre`` (n_out, n_in) in a reused buffer."""
        if self._g is None:
            self._g = np.empty_like(self.W)
        np.matmul(delta.T, pre, out=self._g)
        self._g *= self.dtype.type(scale)
        return self._g

    def update(self, pre, delta, scale):
        self.step(self.local_gradient(pre, delta, scale))

    def step(self, g: np.ndarray) -> None:
        """Apply an update direction g (n_out, n_in) through the optimiser."""
        if not self.trainable or self.optimizer is None:
            return
        self.optimizer.step(self.key, g)
        self.changed()

    def state_dict(self) -> dict:
        return {"W": self.W}

    def load_state_dict(self, state: dict) -> None:
        W = np.asarray(state["W"])
        if W.shape != self.W.shape:
            raise ValueError(f"W has shape {W.shape}, the operator holds {self.W.shape}")
        np.copyto(self.W, W)
        self.changed()

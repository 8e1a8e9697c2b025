"""The neurons' activation rho, its derivative, and the readout's softmax (arrays (B, n))."""

from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (B, C)."""
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def activate(h: np.ndarray, kind: str) -> np.ndarray:
    """rho(h) in place: tanh or hard_sigmoid = clip(h, 0, 1)."""
    if kind == "tanh":
        return np.tanh(h, out=h)
    return np.clip(h, 0.0, 1.0, out=h)


def activation_derivative(s: np.ndarray, h: np.ndarray | None, kind: str) -> np.ndarray:
    """rho'(h) given the state s = rho(h): 1 - s^2 for tanh, 1 inside (0, 1) for hard_sigmoid."""
    if kind == "tanh":
        return 1.0 - s * s
    return ((h > 0.0) & (h < 1.0)).astype(s.dtype)

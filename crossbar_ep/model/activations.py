"""The neurons' activation rho, its derivative, and the readout's softmax (arrays (B, n)).

Registered activations (:data:`ACTIVATIONS`, the values of ``model.activation``): ``tanh``;
``hard_sigmoid`` = clip(x, 0, 1); ``shifted_sigmoid`` = 1 / (1 + exp(-4 (x - 1/2))), the
sigmoid of the prototypical discrete-time EP of Ernoult et al. (NeurIPS 2019), with slope 1
and value 1/2 at x = 1/2 and range (0, 1).

float32 tanh runs through a Numba kernel: an odd rational approximation (numerator degree 9,
denominator degree 8, fitted to tanh on [0, 9] with relative error below 2.3e-8; derivation in
``benchmarks/fit_tanh.py``) evaluated in float64 and rounded once, so it stays within one
float32 ulp of the exact tanh (NumPy's float32 tanh: 1.4 ulp) and runs 4-5x faster than
NumPy's scalar float32 tanh on AVX2 machines.  float64 arrays keep NumPy's tanh.
"""

from __future__ import annotations

import numba
from numba import literal_unroll
import numpy as np

# tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= 9 (beyond, tanh rounds to +-1 in float32)
_P = (1.0, 0.13380746649191116, 0.0034951495673869203, 2.0597699528788112e-05,
      1.3331167246066061e-08)
_Q = (1.0, 0.4671406754005975, 0.025875588613904106, 0.0003284736754319915,
      7.768571887320714e-07)
_CLAMP = 9.0
# fast-math without the no-NaN / no-inf assumptions: a diverged state stays NaN
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
_TANH, _HARD_SIGMOID, _SHIFTED_SIGMOID = 0, 1, 2
ACTIVATIONS = ("tanh", "hard_sigmoid", "shifted_sigmoid")
_CODES = {"tanh": _TANH, "hard_sigmoid": _HARD_SIGMOID, "shifted_sigmoid": _SHIFTED_SIGMOID}
_ZERO_ROW: dict = {}   # width -> a (1, n) float32 zero row (the add of a bias-free layer)


@numba.njit(fastmath=_FAST, error_model="numpy", cache=True)
def _tanh_scalar(v):
    x = np.float64(v)
    if x > _CLAMP:
        x = _CLAMP
    elif x < -_CLAMP:
        x = -_CLAMP
    u = x * x
    num = x * (_P[0] + u * (_P[1] + u * (_P[2] + u * (_P[3] + u * _P[4]))))
    den = _Q[0] + u * (_Q[1] + u * (_Q[2] + u * (_Q[3] + u * _Q[4])))
    return num / den


@numba.njit(fastmath=_FAST, error_model="numpy", cache=True)
def _activate_row(hr, dr, kind):
    if kind == 0:
        for j in range(hr.size):
            hr[j] = _tanh_scalar(hr[j] + dr[j])
    elif kind == 1:
        for j in range(hr.size):
            x = hr[j] + dr[j]
            hr[j] = min(max(x, 0.0), 1.0)
    else:
        for j in range(hr.size):
            x = np.float64(hr[j] + dr[j])
            hr[j] = 1.0 / (1.0 + np.exp(-4.0 * (x - 0.5)))


@numba.njit(fastmath=_FAST, error_model="numpy", cache=True)
def activate_add_nb(h, d, kind):
    """h = rho(h + d) in place: h (B, n) C-contiguous float32; d (B, n) or (1, n) (one row
    broadcast: a bias, or zeros); kind 0 tanh, 1 hard_sigmoid, 2 shifted_sigmoid."""
    for i in range(h.shape[0]):
        _activate_row(h[i], d[i] if d.shape[0] > 1 else d[0], kind)


@numba.njit(fastmath=_FAST, error_model="numpy", cache=True)
def activate_add_copy_nb(h, d, kind, copies):
    """As :func:`activate_add_nb`, and the result is also written into every array of the
    tuple ``copies`` (views (B, n), e.g. column blocks of the settle loop's input buffers),
    in blocks of rows of about 8 KiB while they are still in L1 cache.  The copies are
    plain index loops: a slice assignment into views of mixed layouts cost a 64-wide layer
    twice its tanh."""
    B, n = h.shape
    rows = max(1, 2048 // max(n, 1))
    for r0 in range(0, B, rows):
        r1 = min(B, r0 + rows)
        for i in range(r0, r1):
            _activate_row(h[i], d[i] if d.shape[0] > 1 else d[0], kind)
        for c in literal_unroll(copies):   # views of mixed layouts
            for i in range(r0, r1):
                for j in range(n):
                    c[i, j] = h[i, j]


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (B, C)."""
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def activate(h: np.ndarray, kind: str, add: np.ndarray | None = None,
             copies: tuple = ()) -> np.ndarray:
    """rho(h + add) in place into h: tanh or hard_sigmoid = clip(h, 0, 1); ``add`` (B, n) or
    (n,) (a drive or a bias) is added first; the result is also copied into each array of
    ``copies`` (same shape, same dtype)."""
    if h.dtype == np.float32 and h.ndim == 2 and h.flags.c_contiguous and h.size:
        d = _ZERO_ROW.get(h.shape[1]) if add is None else add
        if d is None:
            d = _ZERO_ROW[h.shape[1]] = np.zeros((1, h.shape[1]), np.float32)
        d = d.reshape(1, -1) if d.ndim == 1 else d
        if d.dtype == np.float32 and d.flags.c_contiguous and d.shape[0] in (1, h.shape[0]):
            code = _CODES[kind]
            if copies:
                activate_add_copy_nb(h, d, code, copies)
            else:
                activate_add_nb(h, d, code)
            return h
    if add is not None:
        h += add
    if kind == "tanh":
        np.tanh(h, out=h)
    elif kind == "hard_sigmoid":
        np.clip(h, 0.0, 1.0, out=h)
    else:
        h[...] = rho(h, kind)
    for c in copies:
        c[...] = h
    return h



def activation_derivative(s: np.ndarray, h: np.ndarray | None, kind: str) -> np.ndarray:
    """rho'(h) given the state s = rho(h): 1 - s^2 for tanh, 1 inside (0, 1) for
    hard_sigmoid, 4 s (1 - s) for shifted_sigmoid."""
    if kind == "tanh":
        return 1.0 - s * s
    if kind == "shifted_sigmoid":
        return 4.0 * s * (1.0 - s)
    return ((h > 0.0) & (h < 1.0)).astype(s.dtype)


def rho(h: np.ndarray, kind: str) -> np.ndarray:
    """rho(h) as a new array (plain NumPy, any dtype): the reference of :func:`activate`."""
    if kind == "tanh":
        return np.tanh(h)
    if kind == "shifted_sigmoid":
        return 1.0 / (1.0 + np.exp(-4.0 * (np.asarray(h) - 0.5)))
    if kind != "hard_sigmoid":
        raise ValueError(f"activation {kind!r}: use one of {', '.join(ACTIVATIONS)}")
    return np.clip(h, 0.0, 1.0)

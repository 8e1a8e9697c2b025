"""Numba passes that rebuild an array's read operands after a write, one pass each where
NumPy takes several: the weights a mapping's conductances encode and the transposed matrix
whose row blocks the forward reads multiply by.  Each gives the same bits as the NumPy
expression it replaces (same operations in the same order, no fast-math; NumPy's error model:
no zero-division check, so the loops vectorise)."""

from __future__ import annotations

import numba
import numpy as np

_BLOCK = 16     # transpose block (fastest here of 8, 16, 32, 64)


@numba.njit(cache=True, error_model="numpy")
def pair_weights(gp, gn, g_min, span, scale, out):
    """``out = scale * ((gp - g_min) / span - (gn - g_min) / span)`` (n_out, n_in; computed in
    float64, rounded once to out's dtype) from the conductances (S) of a differential pair:
    the weights they encode."""
    a, b, o = gp.reshape(-1), gn.reshape(-1), out.reshape(-1)
    for i in range(o.size):
        o[i] = scale * ((a[i] - g_min) / span - (b[i] - g_min) / span)
    return out


@numba.njit(cache=True, error_model="numpy")
def reference_weights(g, g_min, span, scale, out):
    """``out = scale * (2 (g - g_min) / span - 1)`` (n_out, n_in; float64, rounded once to
    out's dtype): the weights one device per weight encodes against the mid-conductance
    reference column."""
    a, o = g.reshape(-1), out.reshape(-1)
    for i in range(o.size):
        o[i] = scale * (2.0 * ((a[i] - g_min) / span) - 1.0)
    return out


@numba.njit(cache=True)
def transpose_blocked(W):
    """``W.T`` (cols, rows) as a new C-contiguous array, copied in blocks of 16 x 16 (about
    3x faster than NumPy's strided copy)."""
    rows, cols = W.shape
    out = np.empty((cols, rows), W.dtype)
    for r0 in range(0, rows, _BLOCK):
        r1 = min(r0 + _BLOCK, rows)
        for k0 in range(0, cols, _BLOCK):
            k1 = min(k0 + _BLOCK, cols)
            for r in range(r0, r1):
                for k in range(k0, k1):
                    out[k, r] = W[r, k]
    return out

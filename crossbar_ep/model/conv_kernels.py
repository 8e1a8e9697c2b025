"""Numba kernels of the conv net's element-wise passes (the GEMMs stay in BLAS): im2col,
col2im (overlap-add), 2x2 max-pooling with switches, and unpool-add.  The
NumPy versions in :mod:`crossbar_ep.model.conv` are their references (tests compare them).
Maps are channels-last (B, H, W, C), C-contiguous.  Serial loops (``prange`` runs them in
order): on a loaded 2-core machine extra threads beside BLAS's cost more than they gain."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

_JIT = dict(cache=True)   # serial: BLAS threads already use the cores


@numba.njit(**_JIT)
def im2col_nb(x, k, pad, out):
    """out (B*Ho*Wo, k*k*C) <- patches of x (B, H, W, C), zero outside the map."""
    B, H, W, C = x.shape
    Ho, Wo = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    for b in prange(B):
        for oy in range(Ho):
            for ox in range(Wo):
                row = out[(b * Ho + oy) * Wo + ox]
                for ky in range(k):
                    iy = oy + ky - pad
                    for kx in range(k):
                        ix = ox + kx - pad
                        base = (ky * k + kx) * C
                        if 0 <= iy < H and 0 <= ix < W:
                            for c in range(C):
                                row[base + c] = x[b, iy, ix, c]
                        else:
                            for c in range(C):
                                row[base + c] = 0.0
    return out


@numba.njit(**_JIT)
def col2im_nb(cols, out, k, pad):
    """out (B, H, W, C) <- overlap-add of the patch rows cols (B*Ho*Wo, k*k*C)."""
    B, H, W, C = out.shape
    Ho, Wo = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    for b in prange(B):
        out[b] = 0.0
        for oy in range(Ho):
            for ox in range(Wo):
                row = cols[(b * Ho + oy) * Wo + ox]
                for ky in range(k):
                    iy = oy + ky - pad
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(k):
                        ix = ox + kx - pad
                        if ix < 0 or ix >= W:
                            continue
                        base = (ky * k + kx) * C
                        for c in range(C):
                            out[b, iy, ix, c] += row[base + c]
    return out


@numba.njit(**_JIT)
def _unpool_add_image(h, g, idx, gain):
    """One image: h (H, W, C) += gain * g (H//2, W//2, C) at each window's switch."""
    H2, W2, C = g.shape
    for i in range(H2):
        for j in range(W2):
            for c in range(C):
                code = idx[i, j, c]
                h[2 * i + code // 2, 2 * j + code % 2, c] += gain * g[i, j, c]


@numba.njit(**_JIT)
def unpool_add_nb(h, g, idx, gain):
    """h (B, H, W, C) += gain * g (B, H//2, W//2, C) at each window's switch position."""
    for b in prange(g.shape[0]):
        _unpool_add_image(h[b], g[b], idx[b], gain)
    return h


@numba.njit(**_JIT)
def unpool_add_to_nb(out, base, g, idx, gain):
    """out = base + gain * unpool(g, idx), image by image (the copy and the scatter-add
    in one pass over each image while it is in cache); out, base (B, H, W, C)."""
    for b in prange(g.shape[0]):
        out[b] = base[b]
        _unpool_add_image(out[b], g[b], idx[b], gain)
    return out


@numba.njit(**_JIT)
def _clip_pool_image(h, m, idx):
    """One image: h (H, W, C) <- clip(h, 0, 1) in place; m, idx (H//2, W//2, C) <- its 2 x 2
    max-pool with switches (as :func:`pool_nb`)."""
    H, W, C = h.shape
    for i in range(H):
        for j in range(W):
            for c in range(C):
                v = h[i, j, c]
                h[i, j, c] = 0.0 if v < 0.0 else (1.0 if v > 1.0 else v)
    for i in range(H // 2):
        for j in range(W // 2):
            for c in range(C):
                best = h[2 * i, 2 * j, c]
                code = 0
                v = h[2 * i, 2 * j + 1, c]
                if v > best:
                    best, code = v, 1
                v = h[2 * i + 1, 2 * j, c]
                if v > best:
                    best, code = v, 2
                v = h[2 * i + 1, 2 * j + 1, c]
                if v > best:
                    best, code = v, 3
                m[i, j, c] = best
                idx[i, j, c] = code


@numba.njit(**_JIT)
def unpool_add_clip_pool_nb(out, base, g, idx, gain, m, idx_out):
    """The discrete hard-sigmoid step of one layer in one pass per image while it is in
    cache: out = clip(base + gain * unpool(g, idx), 0, 1) (out may be base: then the copy
    is skipped), and m, idx_out <- its 2 x 2 max-pool with switches.  out, base (B, H, W, C);
    g, idx, m, idx_out (B, H//2, W//2, C)."""
    same = out.ctypes.data == base.ctypes.data
    for b in prange(g.shape[0]):
        if not same:
            out[b] = base[b]
        _unpool_add_image(out[b], g[b], idx[b], gain)
        _clip_pool_image(out[b], m[b], idx_out[b])
    return out


@numba.njit(**_JIT)
def pool_nb(s, m, idx):
    """m, idx <- 2x2 max-pool of maps s (B, H, W, C) with switches (first maximum in row-major
    window order: codes 0..3 for (0,0), (0,1), (1,0), (1,1))."""
    B, H, W, C = s.shape
    H2, W2 = H // 2, W // 2
    for b in prange(B):
        for i in range(H2):
            for j in range(W2):
                for c in range(C):
                    best = s[b, 2 * i, 2 * j, c]
                    code = 0
                    v = s[b, 2 * i, 2 * j + 1, c]
                    if v > best:
                        best, code = v, 1
                    v = s[b, 2 * i + 1, 2 * j, c]
                    if v > best:
                        best, code = v, 2
                    v = s[b, 2 * i + 1, 2 * j + 1, c]
                    if v > best:
                        best, code = v, 3
                    m[b, i, j, c] = best
                    idx[b, i, j, c] = code
    return m


def pool(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pooled map, switches) of maps s (B, H, W, C); :func:`crossbar_ep.model.conv.pool2` is
    the NumPy reference."""
    B, H, W, C = s.shape
    m = np.empty((B, H // 2, W // 2, C), s.dtype)
    idx = np.empty(m.shape, np.uint8)
    pool_nb(np.ascontiguousarray(s), m, idx)
    return m, idx


@numba.njit(**_JIT)
def clip_pool_nb(h, m, idx):
    """h <- clip(h, 0, 1) in place (the hard-sigmoid), and m, idx <- its 2x2 max-pool with
    switches, image by image while it is in cache; h (B, H, W, C)."""
    for b in prange(h.shape[0]):
        _clip_pool_image(h[b], m[b], idx[b])
    return m

"""Numba kernels of the hot loops, each with a plain NumPy reference next to it.

The GEMMs stay in BLAS (NumPy's matmul); Numba fuses the element-wise passes around them:
ODE state updates with the convergence residual, and the optimiser steps.  Transcendental
functions (tanh) stay in NumPy, whose SIMD tanh is ~50x faster than Numba's scalar libm call
on machines without Intel SVML.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = dict(fastmath=True, cache=True)


@numba.njit(**_JIT)
def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over two C-contiguous arrays of the same shape."""
    fa, fb = a.ravel(), b.ravel()
    m = 0.0
    for i in range(fa.size):
        d = abs(fa[i] - fb[i])
        if d > m:
            m = d
    return m


def max_abs_diff_ref(a, b) -> float:
    return float(np.max(np.abs(a - b))) if a.size else 0.0


@numba.njit(**_JIT)
def _ode_kernel(s, f, r):
    fs, ff = s.ravel(), f.ravel()
    m = 0.0
    for i in range(fs.size):
        d = ff[i] - fs[i]
        fs[i] += r * d
        if abs(d) > m:
            m = abs(d)
    return m


def ode_step(s: np.ndarray, f: np.ndarray, r: float) -> float:
    """In place ``s += r * (f - s)`` (Euler step of tau ds/dt = -s + f with r = dt/tau);
    returns max |f - s| before the step, i.e. max |ds/dt| * tau."""
    return float(_ode_kernel(s, f, s.dtype.type(r)))


def ode_step_ref(s, f, r) -> float:
    d = f - s
    s += r * d
    return float(np.max(np.abs(d))) if d.size else 0.0


@numba.njit(**_JIT)
def heun_predict(s, f, s0, r):
    """Heun predictor in place: ``s0 = s; s += r (f - s)`` (f = rho(h(s))); returns
    max |f - s| (the residual, max |ds/dt| tau, at the start of the step)."""
    fs, ff, f0 = s.ravel(), f.ravel(), s0.ravel()
    m = 0.0
    for i in range(fs.size):
        d = ff[i] - fs[i]
        f0[i] = fs[i]
        fs[i] += r * d
        if abs(d) > m:
            m = abs(d)
    return m


@numba.njit(**_JIT)
def heun_correct(s, f, s0, r):
    """Heun corrector in place, s holding the predictor s0 + r k1 and f = rho(h(s)):
    ``s = s0 + r/2 (k1 + k2)`` with k2 = f - s, i.e. ``(s0 + s)/2 + r/2 (f - s)``."""
    fs, ff, f0 = s.ravel(), f.ravel(), s0.ravel()
    for i in range(fs.size):
        fs[i] = 0.5 * (f0[i] + fs[i]) + 0.5 * r * (ff[i] - fs[i])


@numba.njit(**_JIT)
def heun_error(s, f, s0, r):
    """Local error estimate of the Heun-Euler pair: r/2 max |k2 - k1| (state units)."""
    fs, ff, f0 = s.ravel(), f.ravel(), s0.ravel()
    m = 0.0
    for i in range(fs.size):
        e = abs(0.5 * r * (ff[i] - fs[i]) - 0.5 * (fs[i] - f0[i]))
        if e > m:
            m = e
    return m


@numba.njit(**_JIT)
def heun_repredict(s, s0, r_old, r_new):
    """Shrink a rejected predictor step: s = s0 + (s - s0) r_new / r_old."""
    fs, f0 = s.ravel(), s0.ravel()
    q = r_new / r_old
    for i in range(fs.size):
        fs[i] = f0[i] + (fs[i] - f0[i]) * q


@numba.njit(**_JIT)
def _adam_kernel(w, g, m, v, gscale, lr_t, b1, c1, b2, c2, eps_t):
    fw, fg, fm, fv = w.ravel(), g.ravel(), m.ravel(), v.ravel()
    for i in range(fw.size):
        gi = fg[i] * gscale
        mi = b1 * fm[i] + c1 * gi
        vi = b2 * fv[i] + c2 * gi * gi
        fm[i] = mi
        fv[i] = vi
        fw[i] += lr_t * mi / (math.sqrt(vi) + eps_t)


def adam_step(w, g, m, v, gscale, lr_t, b1, b2, eps_t):
    """Fused Adam ascent step, in place on C-contiguous arrays of one dtype; g is the update
    direction times ``gscale``:

    m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;  w += lr_t * m / (sqrt(v) + eps_t)

    where lr_t = lr sqrt(1 - b2^t) / (1 - b1^t) and eps_t = eps sqrt(1 - b2^t) give exactly
    the bias-corrected update of Kingma & Ba (and PyTorch).  Serial on purpose: Numba's
    thread pool fights OpenBLAS's spinning threads right after a GEMM, which cost 5x here;
    the scalars are cast to the array dtype so float32 loops stay in float32 SIMD.
    """
    c = w.dtype.type
    _adam_kernel(w, g, m, v, c(gscale), c(lr_t), c(b1), c(1.0 - b1), c(b2), c(1.0 - b2),
                 c(eps_t))


def adam_step_ref(w, g, m, v, gscale, lr_t, b1, b2, eps_t):
    gi = g * gscale
    m *= b1
    m += (1 - b1) * gi
    v *= b2
    v += (1 - b2) * gi * gi
    w += lr_t * m / (np.sqrt(v) + eps_t)


@numba.njit(**_JIT)
def _sgd_kernel(w, g, buf, gscale, lr, mu):
    fw, fg, fb = w.ravel(), g.ravel(), buf.ravel()
    for i in range(fw.size):
        bi = mu * fb[i] + fg[i] * gscale
        fb[i] = bi
        fw[i] += lr * bi


def sgd_step(w, g, buf, gscale, lr, mu):
    """SGD ascent with momentum, in place: buf = mu buf + g'; w += lr buf (mu = 0: plain)."""
    c = w.dtype.type
    _sgd_kernel(w, g, buf, c(gscale), c(lr), c(mu))


def sgd_step_ref(w, g, buf, gscale, lr, mu):
    buf *= mu
    buf += g * gscale
    w += lr * buf

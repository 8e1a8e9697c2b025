"""Derivation of the rational tanh used for float32 states (crossbar_ep/model/activations.py).

Fits tanh(x) ~ x P(x^2) / Q(x^2), P and Q of degree 4 with P(0) = Q(0) = 1 (so the slope at 0
is exact), on [0, 9] (beyond 9, tanh rounds to 1 in float32), minimising the largest relative
error by Lawson-weighted linear least squares on the linearised residual
x P(u) - tanh(x) Q(u).  Prints the coefficients and the largest relative error (2.3e-8, below
half a float32 ulp), and the largest error in float32 ulps of the shipped kernel.

    python benchmarks/fit_tanh.py
"""

from __future__ import annotations

import os
import sys

import numpy as np
from numpy.polynomial import polynomial as poly

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def fit(m: int = 4, n: int = 4, iters: int = 300):
    x = np.concatenate([np.linspace(0, 9.05, 100001)[1:], np.geomspace(1e-6, 1e-1, 1000)])
    t, u = np.tanh(x), x * x
    lw, q_val, best = np.ones_like(x), np.ones_like(x), (np.inf, None, None)
    a = np.hstack([(x * u ** i)[:, None] for i in range(1, m + 1)]
                  + [(-t * u ** j)[:, None] for j in range(1, n + 1)])
    for _ in range(iters):
        w = lw / (t * np.abs(q_val))
        sol, *_ = np.linalg.lstsq(a * w[:, None], (t - x) * w, rcond=None)
        p, q = np.r_[1.0, sol[:m]], np.r_[1.0, sol[m:]]
        q_val = poly.polyval(u, q)
        err = (x * poly.polyval(u, p) / q_val - t) / t
        e = float(np.max(np.abs(err)))
        if e < best[0]:
            best = (e, p, q)
        lw = lw * np.abs(err) ** 0.5     # Lawson: weight the worst points up
        lw /= lw.mean()
    return best


def main() -> int:
    e, p, q = fit()
    print("P =", tuple(p.tolist()))
    print("Q =", tuple(q.tolist()))
    print(f"largest relative error on [0, 9]: {e:.3g}")
    from crossbar_ep.model.activations import activate
    x = np.linspace(-10, 10, 2_000_001).astype(np.float32)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    ours = activate(x.reshape(1, -1).copy(), "tanh").ravel()
    print(f"shipped kernel: largest error {np.max(np.abs(ours - exact) / ulp):.2f} float32 ulp; "
          f"NumPy float32 tanh: {np.max(np.abs(np.tanh(x) - exact) / ulp):.2f} ulp")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Anderson acceleration of the settle map's fixed point (``settling.solver: anderson``).

A free or nudged phase of the discrete map iterates ``s <- f(s)`` to its fixed point.  Plain
iteration converges linearly at the rate of the map's Jacobian spectral radius rho; Anderson
acceleration (type II, Walker & Ni 2011) mixes the last m iterates: with residuals
``g_i = f(s_i) - s_i`` and differences ``dG``, ``dF`` of the last m residuals and images,

    gamma = argmin_gamma || g_k - dG gamma ||_2 ,     s_{k+1} = f(s_k) - dF gamma ,

which for a linear contraction is GMRES on ``(I - J) s = b`` in disguise (the same Krylov
space, so at most as many steps as plain iteration needs and usually far fewer when rho is
near 1).  With mixing ``beta`` < 1 the step is ``s_{k+1} = s_k - dX gamma + beta (g_k - dG
gamma)`` (``dX`` the iterates' differences): on the saturating tanh map of a deep net the
undamped step (beta = 1, the default: fewest steps on weakly coupled nets) can stall where
beta = 1/2 converges.  Every sample of a batch settles to its own fixed point, so gamma is solved per
sample (B small m x m systems, Tikhonov-regularised, in float64).  Each iteration costs one
evaluation of f, as a plain step does: one read of every array on a crossbar.  A sample whose
residual grows past ``restart_factor`` times its best so far, or stagnates, loses its
history and takes the plain step, and after a few such restarts stays on plain steps (the safeguard where the map is far from linear: saturation, hard-sigmoid kinks,
max-pooling switches).
"""

from __future__ import annotations

import numpy as np


class Anderson:
    """History and mixing of one phase.  ``m``: iterates mixed (depth); ``reg``: relative
    Tikhonov term of the least-squares normal equations; ``restart_factor``: residual growth
    that clears the history."""

    def __init__(self, m: int = 5, beta: float = 1.0, reg: float = 1e-10,
                 restart_factor: float = 2.0, max_restarts: int = 3):
        if m < 1:
            raise ValueError(f"anderson depth {m}: use m >= 1")
        self.m, self.beta, self.reg = int(m), float(beta), float(reg)
        self.restart_factor, self.max_restarts = float(restart_factor), int(max_restarts)
        self.DG = self.DX = None      # ring buffers (B, m, N) of residual / iterate differences
        self.filled, self.slot = 0, 0
        self._g = self._x = None
        self.best = None

    def step(self, s: np.ndarray, fs: np.ndarray) -> np.ndarray:
        """The next iterate (B, N) from the current one s and its image f(s) (B, N), both flat
        per sample.  A sample whose residual norm grew past ``restart_factor`` times its best
        so far, or did not improve on it by 10 % in 2 m steps (stagnation), loses its history
        (its step is then the plain one, ``s + beta g``); after ``max_restarts`` such restarts
        it keeps taking plain steps for the rest of the phase."""
        x = s.astype(np.float64)
        g = fs.astype(np.float64)
        g -= x
        norm = np.sqrt(np.einsum("bn,bn->b", g, g))
        if self.best is None:
            B, N = g.shape
            self.best, self.stall = norm.copy(), np.zeros(B, np.int64)
            self.restarts = np.zeros(B, np.int64)
            self.DG = np.zeros((B, self.m, N))
            self.DX = np.zeros((B, self.m, N))
        grown = norm > self.restart_factor * self.best
        improved = norm < 0.9 * self.best
        self.stall = np.where(improved, 0, self.stall + 1)
        grown |= self.stall > 2 * self.m         # stagnation: start the mixing afresh
        self.stall[grown] = 0
        self.restarts += grown
        grown |= self.restarts >= self.max_restarts   # mixing keeps failing: plain steps
        np.minimum(self.best, norm, out=self.best)
        if self._g is not None:
            np.subtract(g, self._g, out=self.DG[:, self.slot])
            np.subtract(x, self._x, out=self.DX[:, self.slot])
            self.slot = (self.slot + 1) % self.m
            self.filled = min(self.filled + 1, self.m)
        if grown.any():
            self.DG[grown] = 0.0
            self.DX[grown] = 0.0
            self.best[grown] = norm[grown]
        self._g, self._x = g, x
        if not self.filled:
            return (x + self.beta * g).astype(fs.dtype)
        dG, dX = self.DG[:, :self.filled], self.DX[:, :self.filled]
        A = dG @ dG.transpose(0, 2, 1)          # (B, k, k)
        rhs = dG @ g[:, :, None]                # (B, k, 1)
        scale = np.trace(A, axis1=1, axis2=2)[:, None, None] / A.shape[1]
        A += (self.reg * scale + 1e-300) * np.eye(A.shape[1])
        gam = np.linalg.solve(A, rhs)           # (B, k, 1)
        nxt = x - (gam.transpose(0, 2, 1) @ dX)[:, 0]
        nxt += self.beta * (g - (gam.transpose(0, 2, 1) @ dG)[:, 0])
        return nxt.astype(fs.dtype)


def anderson_reference(f, s0: np.ndarray, steps: int, m: int, beta: float = 0.5) -> list:
    """Plain NumPy Anderson (type II, mixing beta) on one vector for tests: iterates
    [s0, s1, ...] of ``s <- f(s)`` mixed over the last m residuals (least squares by lstsq,
    no safeguard)."""
    xs, gs = [np.asarray(s0, float)], []
    for _ in range(steps):
        x = xs[-1]
        gs.append(f(x) - x)
        k = min(m, len(gs) - 1)
        if k == 0:
            xs.append(x + beta * gs[-1])
            continue
        dG = np.stack([gs[-i] - gs[-i - 1] for i in range(k, 0, -1)], axis=1)
        dX = np.stack([xs[-i] - xs[-i - 1] for i in range(k, 0, -1)], axis=1)
        gamma = np.linalg.lstsq(dG, gs[-1], rcond=None)[0]
        xs.append(x - dX @ gamma + beta * (gs[-1] - dG @ gamma))
    return xs

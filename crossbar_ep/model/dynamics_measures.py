"""The FRE-RNN paper's measures of the settling dynamics, as its authors define them.

The free phase is the map ``s_{t+1} = rho(M s_t + d)`` from ``s_0 = 0``: ``s`` stacks the hidden
layers (N = sum n_k units), ``M`` (N, N) is the hidden coupling of
:func:`crossbar_ep.model.diagnostics.coupling_matrix` (forward blocks times alpha, feedback
blocks times beta_i, no activation slope), ``d`` (B, N) the input drive ``W_0 x`` plus biases.
Everything here runs in float64 (a 1e-6 threshold on a state difference is below float32's
resolution of a 200-unit state).

- Spectral radius (SR): the largest |eigenvalue| of M.
- FTMLE: per sample, a random unit tangent vector (uniform entries in [0, 1), normalised) is
  carried through the linearised map, ``delta <- rho'(h_t) * (M delta)``; the log of its norm
  is recorded and it is renormalised every step.  The FTMLE is the mean log growth over the
  first ``ftmle_steps`` steps (the config's T in the authors' code), averaged over the samples.
- Convergence steps: per sample, the first step t (counting map applications from 1) at which
  ``||s_t - s_{t-1}|| < tol`` has held for ``consecutive`` steps in a row; -1 if not within
  ``cap`` steps.  The authors' code records the 0-based loop index, one less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar_ep.model.activations import activation_derivative, rho
from crossbar_ep.model.diagnostics import coupling_matrix
from crossbar_ep.model.network import Network


def input_drive(net: Network, x: np.ndarray) -> np.ndarray:
    """(B, N) constant drive of the stacked hidden layers: input projections and biases."""
    L = net.L
    off = np.concatenate([[0], np.cumsum(net.sizes[1:L + 1])])
    x = np.asarray(x, np.float64)
    D = np.zeros((x.shape[0], off[-1]))
    for p in net.projections:
        if p.src == 0 and 1 <= p.dst <= L:
            D[:, off[p.dst - 1]:off[p.dst]] += p.scale * x @ np.asarray(net.W[p.name],
                                                                        np.float64).T
    for k, b in net.b.items():
        if 1 <= k <= L:
            D[:, off[k - 1]:off[k]] += b
    return D


def spectral_radius(net: Network) -> float:
    """Largest |eigenvalue| of the hidden coupling M (the authors' SR)."""
    return float(np.abs(np.linalg.eigvals(coupling_matrix(net))).max())


@dataclass
class Settling:
    """Measures of one free phase of a batch (B samples, N hidden units)."""

    log_growth: np.ndarray     # (B, steps_tangent): log ||delta|| per step before renormalising
    conv_step: np.ndarray      # (B,) convergence step (1-based), -1 if not within the cap
    steps_run: int             # map applications made (stops once every sample converged)
    dnorm: np.ndarray          # (steps_run,) ||s_t - s_{t-1}|| of the first sample
    trajectory: np.ndarray | None = None   # (steps_run, n_record) recorded units, sample 0

    def ftmle(self, steps: int) -> float:
        """Mean over samples of the mean log growth over the first ``steps`` steps."""
        return float(self.log_growth[:, :steps].mean(axis=1).mean())

    def ftmle_per_sample(self, steps: int) -> np.ndarray:
        return self.log_growth[:, :steps].mean(axis=1)

    @property
    def converged(self) -> np.ndarray:
        return self.conv_step >= 0

    def conv_steps_mean(self) -> float:
        """Mean convergence step over the samples that converged (NaN if none did)."""
        c = self.conv_step[self.converged]
        return float(c.mean()) if c.size else float("nan")


def settle_measures(net: Network, x: np.ndarray, cap: int, tangent_steps: int,
                    tol: float = 1e-6, consecutive: int = 3, seed: int = 0,
                    record: np.ndarray | None = None) -> Settling:
    """Run the free map from 0 for up to ``cap`` steps (fewer once every sample converged,
    but at least ``tangent_steps``), carrying one tangent vector per sample for the first
    ``tangent_steps`` steps.  ``record``: indices (into the stacked N units) of sample 0's
    units whose states are kept per step (the settling trajectories of the paper's Fig 2)."""
    M = coupling_matrix(net)
    Mt = np.ascontiguousarray(M.T)
    D = input_drive(net, x)
    B, N = D.shape
    kind = net.activation
    rng = np.random.default_rng(seed)
    delta = rng.random((B, N))
    delta /= np.linalg.norm(delta, axis=1, keepdims=True) + 1e-300
    logs = np.zeros((B, tangent_steps))
    s = np.zeros((B, N))
    counter = np.zeros(B, int)
    conv = np.full(B, -1)
    dn, traj = [], []
    t = 0
    while t < cap:
        h = s @ Mt + D
        s_new = rho(h, kind)
        if t < tangent_steps:
            delta = (delta @ Mt) * activation_derivative(s_new, h, kind)
            nrm = np.linalg.norm(delta, axis=1)
            logs[:, t] = np.log(np.maximum(nrm, 1e-300))
            delta /= np.maximum(nrm, 1e-300)[:, None]
        diff = np.linalg.norm(s_new - s, axis=1)
        s = s_new
        t += 1
        counter = np.where(diff < tol, counter + 1, 0)
        conv[(counter >= consecutive) & (conv < 0)] = t
        dn.append(diff[0])
        if record is not None:
            traj.append(s[0, record].copy())
        if t >= tangent_steps and (conv >= 0).all() and record is None:
            break
    return Settling(logs, conv, t, np.array(dn), np.array(traj) if record is not None else None)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """cos of the angle between two arrays taken as vectors (NaN if either is zero)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def ep_bp_cosines(net: Network, ep_learner, x: np.ndarray, y1h: np.ndarray) -> dict:
    """Per trained matrix: cos between the EP update of ``ep_learner`` (its settler, T, K and
    nudge) and the negative loss gradient of the feed-forward BP twin of the same weights, on
    one batch.  Both point downhill, so a perfect EP estimate gives 1."""
    from crossbar_ep.model.learners import BPLearner
    ep, _ = ep_learner.updates(np.ascontiguousarray(x, dtype=net.dtype),
                               y1h.astype(net.dtype))
    bp, _ = BPLearner(net, None).gradients(np.asarray(x, net.dtype), y1h.astype(net.dtype))
    return {p.name: cosine(ep[p.name], bp[p.name]) for p in net.projections}

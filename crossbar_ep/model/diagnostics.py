"""Convergence diagnostics of the settling dynamics: per-layer residuals, settling time, the
spectral radius of the linearised map at the free fixed point, and the finite-time Lyapunov
exponent (FTLE) of the free-phase trajectory.

The discrete FRE-RNN map is ``s -> F(s) = rho(h(s))`` with ``h = M s + drive``; its Jacobian at
a state is ``J = diag(rho'(h)) M`` where ``M`` (sum n_k, sum n_k) stacks the hidden-to-hidden
couplings (forward weights times alpha, feedback times beta_k; the input drive and the nudge
are not states).  The fixed point is locally attracting for the map when the spectral radius
``rho(J) < 1``; the ODE ``tau ds/dt = -s + F(s)`` when every eigenvalue of J has real part
below 1.  The FTLE ``(1/t) log(|delta_t| / |delta_0|)`` (per tau) of a small perturbation
carried along the trajectory (renormalised every step, Benettin's method) is negative when
nearby trajectories converge; at the fixed point it tends to ``log rho(J)`` per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar_ep.model.network import Network
from crossbar_ep.model.activations import rho
from crossbar_ep.model.settle import activation_derivative, preactivations, settle_reference


def coupling_matrix(net: Network) -> np.ndarray:
    """M (N, N), N = sum of hidden sizes: dh/ds between hidden layers (free phase)."""
    L = net.L
    off = np.concatenate([[0], np.cumsum(net.sizes[1:L + 1])])
    M = np.zeros((off[-1], off[-1]))
    for p in net.projections:
        if 1 <= p.src and p.dst <= L:
            M[off[p.dst - 1]:off[p.dst], off[p.src - 1]:off[p.src]] += p.scale * net.W[p.name]
    for f in net.feedbacks:
        M[off[f.dst - 1]:off[f.dst], off[f.src - 1]:off[f.src]] += \
            f.scale * net.feedback_matrix(f).T
    return M


def jacobian(net: Network, x: np.ndarray, s: list, sample: int) -> np.ndarray:
    """J = diag(rho'(h)) M of the discrete map at the states s, for one sample."""
    h = preactivations(net, s)
    d = np.concatenate([activation_derivative(rho(h[k][sample], net.activation),
                                              h[k][sample], net.activation)
                        for k in range(1, net.L + 1)])
    return d[:, None] * coupling_matrix(net)


def ftle(net: Network, x: np.ndarray, steps: int, r: float = 1.0, eps: float = 1e-7,
         seed: int = 0) -> np.ndarray:
    """Largest finite-time Lyapunov exponent per sample (1/tau) of the free phase from s = 0
    over ``steps`` steps of size r tau, by a renormalised twin trajectory."""
    L, B = net.L, x.shape[0]
    rng = np.random.default_rng(seed)
    s = [x] + [np.zeros((B, n)) for n in net.sizes[1:L + 1]]
    d = [None] + [rng.standard_normal((B, n)) for n in net.sizes[1:L + 1]]
    norm = np.sqrt(sum((d[k] ** 2).sum(axis=1) for k in range(1, L + 1)))
    t = [x] + [s[k] + eps * d[k] / norm[:, None] for k in range(1, L + 1)]
    acc = np.zeros(B)
    for _ in range(steps):
        s = settle_reference(net, x, 1, s_init=s, r=r)
        t = settle_reference(net, x, 1, s_init=t, r=r)
        dist = np.sqrt(sum(((t[k] - s[k]) ** 2).sum(axis=1) for k in range(1, L + 1)))
        dist = np.maximum(dist, 1e-300)
        acc += np.log(dist / eps)
        t = [x] + [s[k] + (t[k] - s[k]) * (eps / dist)[:, None] for k in range(1, L + 1)]
    return acc / (steps * r)


@dataclass
class Report:
    layer_residual: list       # max |rho(h) - s| per hidden layer at the end of the free phase
    steps: int
    time_s: float
    spectral_radius: np.ndarray  # per sample, of J at the free fixed point
    coupling_radius: float     # of M alone (no activation slope)
    ftle: np.ndarray           # per sample (1/tau)

    def text(self, tau_s: float) -> str:
        lines = ["free phase: steps %d, settling time %.3g s (tau %.3g s)" % (
            self.steps, self.time_s, tau_s)]
        for k, r in enumerate(self.layer_residual, 1):
            lines.append(f"  layer {k}: residual max |rho(h) - s| = {r:.3g}")
        sr = self.spectral_radius
        lines.append(f"spectral radius of the map's Jacobian at the free state: mean "
                     f"{sr.mean():.4f}, max {sr.max():.4f} over {sr.size} samples "
                     f"({'contracting' if sr.max() < 1 else 'NOT contracting'})")
        lines.append(f"spectral radius of the coupling M alone: {self.coupling_radius:.4f}")
        verdict = "converging" if self.ftle.max() < 0 else "diverging or chaotic"
        lines.append(f"finite-time Lyapunov exponent (1/tau): mean {self.ftle.mean():.4f}, "
                     f"max {self.ftle.max():.4f} ({verdict})")
        return "\n".join(lines)


def diagnose(net: Network, settler, x: np.ndarray, tau_s: float,
             jac_samples: int = 4) -> Report:
    """Settle x with the run's settler and report the diagnostics (``jac_samples`` samples
    for the eigenvalues, which cost O(N^3) each)."""
    free = settler.free(x.astype(net.dtype))
    s = [x.astype(float)] + [np.asarray(a, float) for a in free.s[1:]]
    h = preactivations(net, s)
    res = []
    for k in range(1, net.L + 1):
        f = rho(h[k], net.activation)
        res.append(float(np.abs(f - s[k]).max()))
    n = min(jac_samples, x.shape[0])
    radii = np.array([np.abs(np.linalg.eigvals(jacobian(net, x, s, i))).max()
                      for i in range(n)])
    cm = float(np.abs(np.linalg.eigvals(coupling_matrix(net))).max())
    steps = max(free.steps, 1)
    return Report(res, free.steps, free.time_tau * tau_s, radii, cm,
                  ftle(net, x.astype(float), steps, settler.r))

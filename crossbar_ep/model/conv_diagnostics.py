"""Matrix-free convergence diagnostics of any layer map's settling (``crossbar-ep diagnose`` on
a conv experiment): per-layer residuals at the end of the free phase, the spectral radius of
the synchronous map's Jacobian at the free state, and the finite-time Lyapunov exponent of
the free-phase trajectory.

The map ``s -> f(s)`` (:meth:`Settler.step_map`, max-pooling switches included) is never
formed as a matrix: Jacobian-vector products are finite differences ``(f(s + eps v) - f(s)) /
eps`` (exact for the piecewise-linear hard-sigmoid and pooling away from kinks and ties), the
spectral radius comes from power iteration on them (every sample at once), and the FTLE from a
renormalised twin trajectory (Benettin's method), as for dense nets in
:mod:`crossbar_ep.model.diagnostics` (which forms the dense Jacobian exactly).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np


@contextmanager
def exact_reads(net):
    """For the duration, every operator of ``net`` that is not a digital matrix (a crossbar
    array) is replaced by a digital matrix of its dense view: the arrays' effective weights
    read without DAC, ADC or read noise.  Yields the names replaced."""
    from crossbar_ep.model.operators import DigitalMatrix
    saved = dict(net.ops)
    swapped = [n for n, op in saved.items() if not isinstance(op, DigitalMatrix)]
    try:
        for name in swapped:
            net.attach(name, DigitalMatrix(np.array(saved[name].dense(), dtype=net.dtype),
                                           name))
        yield swapped
    finally:
        for name in swapped:
            net.attach(name, saved[name])


def _norms(d: list) -> np.ndarray:
    """Per-sample Euclidean norm over all layers' maps (B,)."""
    return np.sqrt(sum((a.reshape(a.shape[0], -1).astype(float) ** 2).sum(axis=1)
                       for a in d))


def _step(settler, xs: list, x: np.ndarray) -> list:
    """f(s) of the hidden states xs (layer 1..L, (B, n_k)) for the input batch x (whose drive
    the settler read last)."""
    return settler.step_map([x] + list(xs))[1:]


def spectral_radius(settler, xs: list, x: np.ndarray, iters: int = 60, eps: float = 1e-4,
                    seed: int = 0) -> np.ndarray:
    """Power-iteration estimate of the spectral radius of the free map's Jacobian at the
    states ``xs`` (layer 1..L, (B, n_k)) of input x, per sample (B,): the geometric mean growth of
    ``|J^k v|`` over the second half of ``iters`` iterations (Gelfand's formula; it converges
    where the plain ratio would oscillate: the layered map's eigenvalues come in +-pairs).
    ``eps`` is the finite-difference step in state units."""
    rng = np.random.default_rng(seed)
    settler.start_state(x)       # reads x's drive
    F0 = _step(settler, xs, x)
    v = [rng.standard_normal(x.shape) for x in xs]
    n = _norms(v)
    v = [a / n.reshape(-1, *[1] * (a.ndim - 1)) for a in v]
    logs = []
    for _ in range(iters):
        Fv = _step(settler, [(s + eps * a).astype(s.dtype) for s, a in zip(xs, v)], x)
        Jv = [(b.astype(float) - a) / eps for a, b in zip(F0, Fv)]
        g = np.maximum(_norms(Jv), 1e-300)
        logs.append(np.log(g))
        v = [a / g.reshape(-1, *[1] * (a.ndim - 1)) for a in Jv]
    return np.exp(np.mean(logs[len(logs) // 2:], axis=0))


def ftle(settler, x: np.ndarray, steps: int, eps: float = 1e-4, seed: int = 0) -> np.ndarray:
    """Largest finite-time Lyapunov exponent per sample (per step = per tau) of the free
    phase of input x from its start state over ``steps`` steps, by a twin trajectory
    renormalised to ``eps`` every step."""
    rng = np.random.default_rng(seed)
    start = settler.start_state(x)[1:]
    d = [rng.standard_normal(x.shape) for x in start]
    n = _norms(d)
    xs = list(start)
    ts = [(x + eps * a / n.reshape(-1, *[1] * (a.ndim - 1))).astype(x.dtype)
          for x, a in zip(xs, d)]
    acc = np.zeros(start[0].shape[0])
    for _ in range(steps):
        xs, ts = _step(settler, xs, x), _step(settler, ts, x)
        diff = [b.astype(float) - a for a, b in zip(xs, ts)]
        g = np.maximum(_norms(diff), eps * 1e-12)   # a perturbation that died: -27.6 a step
        acc += np.log(g / eps)
        ts = [(a + eps * c / g.reshape(-1, *[1] * (c.ndim - 1))).astype(a.dtype)
              for a, c in zip(xs, diff)]
    return acc / max(steps, 1)


@dataclass
class ConvReport:
    steps: int
    layer_residual: list      # max |f(s) - s| per layer at the end of the free phase
    spectral_radius: np.ndarray
    ftle: np.ndarray
    exact: list | None = None   # arrays whose reads were taken exact for the Jacobian / FTLE

    def text(self) -> str:
        lines = [f"free phase: {self.steps} steps"]
        for k, r in enumerate(self.layer_residual, 1):
            lines.append(f"  layer {k}: residual max |f(s) - s| = {r:.3g}")
        sr = self.spectral_radius
        lines.append(f"spectral radius of the map's Jacobian at the free state (power "
                     f"iteration): mean {sr.mean():.4f}, max {sr.max():.4f} over {sr.size} "
                     f"samples ({'contracting' if sr.max() < 1 else 'NOT contracting'})")
        verdict = "converging" if self.ftle.max() < 0 else "diverging or chaotic"
        lines.append(f"finite-time Lyapunov exponent (per step): mean {self.ftle.mean():.4f}, "
                     f"max {self.ftle.max():.4f} ({verdict})")
        if self.exact:
            lines.append(f"(spectral radius and FTLE of the arrays' weights read exactly: "
                         f"{', '.join(self.exact)}; finite differences through DAC, ADC and "
                         f"read noise would measure the noise, not the dynamics)")
        return "\n".join(lines)


def diagnose_conv(settler, x: np.ndarray, jac_samples: int = 4) -> ConvReport:
    """Settle x (B, n_in) with the run's settler and report the diagnostics (the spectral
    radius and FTLE on the first ``jac_samples`` samples)."""
    x = np.ascontiguousarray(x, dtype=settler.net.dtype)
    free = settler.free(x)
    new = _step(settler, free.s[1:], x)
    res = [float(np.abs(a - b).max()) for a, b in zip(new, free.s[1:])]
    n = max(1, min(jac_samples, x.shape[0]))
    xs = [a[:n] for a in free.s[1:]]
    with exact_reads(settler.net) as swapped:   # the dynamics, not the periphery's noise
        settler.refresh()
        sr = spectral_radius(settler, xs, x[:n])
        fl = ftle(settler, x[:n], settler.T)
    settler.refresh()
    return ConvReport(free.steps, res, sr, fl, swapped)

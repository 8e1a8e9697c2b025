"""Equilibrium Propagation on the FRE-RNN, and the backpropagation twin of the same net.

Both learners expose ``train_batch(x, y) -> BatchStats`` and ``predict(x) -> p`` over the
same :class:`~crossbar_ep.model.network.Network`, so EP and BP runs share data, init and seed.
Updates follow the ascent convention (they point downhill on the cross-entropy loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar_ep.model.heads import bp_head_terms
from crossbar_ep.model.network import Network
from crossbar_ep.model.optim import Optimizer
from crossbar_ep.model.settle import (
    PhaseResult,
    Settler,
    activation_derivative,
    rho,
    softmax,
)


@dataclass
class BatchStats:
    loss_sum: float      # summed cross-entropy of the free-phase prediction
    correct: int         # correctly classified samples (free phase)
    residual: float      # max |ds| per tau at the last free-phase step (EP; 0 for BP)
    steps: int           # free-phase steps used (EP; 0 for BP)
    nudged_residual: float = 0.0   # the same for the nudged phase
    nudged_steps: int = 0
    free_time_tau: float = 0.0     # integrated time of the free phase (tau)
    nudged_time_tau: float = 0.0   # and of the nudged phase


def one_hot(y: np.ndarray, n: int, dtype) -> np.ndarray:
    out = np.zeros((y.shape[0], n), dtype)
    out[np.arange(y.shape[0]), y] = 1.0
    return out


def cross_entropy_sum(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.maximum(p[np.arange(y.shape[0]), y], 1e-12)).sum())


class EPLearner:
    """Two-phase EP with local updates ``dW = mean((sb_k - s0_k) outer s0_j)``.

    Every trained operator learns from its local signals through
    :meth:`~crossbar_ep.model.operators.WeightOperator.update` (a digital matrix through the
    optimiser, a crossbar array through its pulse rule).  ``norm`` maps a projection (or bias
    ``b<k>``) to the divisor of its update: 1 for raw updates, ``beta_f * prod(beta)`` along
    the feedback path from the nudge for normalised ones (the BP-gradient scale).
    ``centered`` (Laborieux et al. 2021): nudged phases at +beta_f and -beta_f from the free
    state and ``delta = (s+ - s-) / 2``, which cancels the O(beta_f) bias of the one-sided
    estimate (one more nudged phase per batch).  With phase averaging in the settler the
    update uses the averaged states (``PhaseResult.s_mean``).
    """

    def __init__(self, net: Network, settler: Settler, optimizer: Optimizer,
                 normalised: bool = False, pulses=None, norm: dict | None = None,
                 readout_error: str = "free", centered: bool = False):
        self.net, self.settler, self.opt = net, settler, optimizer
        self.centered = centered
        self.readout_error = readout_error   # free: y - p0; nudged: y - p at the nudged end
        self.targets = None     # optional (x, y1h) -> {head index: target} (distillation)
        self.layer_stats = None  # optional observer of (delta, updates) per batch
        self.pulses = pulses            # backend.PulseStats over the crossbar operators
        if norm is None:
            norm = {k: (v if normalised else 1.0) for k, v in net.norm.items()}
        self.norm = norm
        net.set_optimizer(optimizer)
        self._bgrads = {k: np.empty_like(b) for k, b in net.b.items()}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.settler.free(x).p

    def settle(self, x: np.ndarray, y: np.ndarray | None = None,
               free: PhaseResult | None = None) -> PhaseResult:
        """Free phase of x (B, n_in); with labels y (B,) (or one-hot (B, n_out)) the nudged
        phase from ``free`` (settled here when not given)."""
        x = np.ascontiguousarray(x, dtype=self.net.dtype)
        if y is None:
            return self.settler.free(x)
        if free is None:
            free = self.settler.free(x)
        y = np.asarray(y)
        y1h = y if y.ndim == 2 else one_hot(y, self.net.sizes[-1], self.net.dtype)
        return self.settler.nudged(free, y1h.astype(self.net.dtype, copy=False))

    def phases(self, x: np.ndarray, y1h: np.ndarray):
        """Free and nudged phases; returns (free, nudged, delta) with delta[k] the
        post-synaptic signal of layer k (sb - s0, or y - p for the readout)."""
        free = self.settler.free(x)
        nudged = self.settler.nudged(free, y1h)
        L = self.net.L
        if self.centered:
            neg = _used(self.settler.nudged(free, y1h, sign=-1.0))
            pos = _used(nudged)
            delta = {k: 0.5 * (pos[k] - neg[k]) for k in range(1, L + 1)}
        else:
            pos, s0 = _used(nudged), _used(free)
            delta = {k: pos[k] - s0[k] for k in range(1, L + 1)}
        end = nudged if self.readout_error == "nudged" else free
        probs = dict(free.heads or {})          # auxiliary heads learn at the free state
        probs[L + 1] = end.p
        for e, p in probs.items():
            delta[e] = (y1h[e] if isinstance(y1h, dict) else y1h) - p
        return free, nudged, delta

    def local_signals(self, x: np.ndarray, y1h: np.ndarray) -> tuple[dict, PhaseResult]:
        """name -> (pre-synaptic s0, post-synaptic delta, scale) of every trained operator,
        and the free-phase result."""
        free, nudged, delta = self.phases(x, y1h)
        self.last_nudged = nudged
        B, s0 = x.shape[0], _used(free)
        local = {p.name: (s0[p.src], delta[p.dst], 1.0 / (B * self.norm[p.name]))
                 for p in self.net.projections}
        self.local, self.last_delta = local, delta
        return local, free

    def updates(self, x: np.ndarray, y1h: np.ndarray) -> tuple[dict, PhaseResult]:
        """EP update directions (already divided by the batch size and the normaliser) and
        the free-phase result, without applying them."""
        local, free = self.local_signals(x, y1h)
        out = {n: s * (d.T @ pre) for n, (pre, d, s) in local.items()}
        out.update(self._bias_updates(x.shape[0]))
        return out, free

    def _bias_updates(self, B: int) -> dict:
        out = {}
        for k, g in self._bgrads.items():
            np.sum(self.last_delta[k], axis=0, out=g)
            g *= 1.0 / (B * self.norm[f"b{k}"])
            out[f"b{k}"] = g
        return out

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        net = self.net
        y1h = one_hot(y, net.sizes[-1], net.dtype)
        if self.targets is not None:
            y1h = self.targets(x, y1h)
        local, free = self.local_signals(x, y1h)
        if self.layer_stats is not None:
            self.layer_stats.observe(self.last_delta, local)
        self.opt.begin()
        for name, (pre, d, scale) in local.items():
            net.ops[name].update(pre, d, scale)
        for name, g in self._bias_updates(x.shape[0]).items():
            self.opt.step(name, g)
        nudged = self.last_nudged
        return BatchStats(cross_entropy_sum(free.p, y), int((free.p.argmax(1) == y).sum()),
                          free.residual, free.steps, nudged.residual, nudged.steps,
                          free.time_tau, nudged.time_tau)


def _used(r: PhaseResult) -> list:
    """The states a phase hands to the update: averaged over its last steps when the settler
    averages, else its final states."""
    return r.s if r.s_mean is None else r.s_mean


class BPLearner:
    """Backpropagation through the feed-forward net the FRE-RNN tends to as beta_i -> 0:
    ``s_k = rho(alpha W_{k-1} s_{k-1} + sum of residual links + b_k)``, softmax readout."""

    settler = None   # no settling and no crossbar arrays: the BP twin is digital
    pulses = None

    def __init__(self, net: Network, optimizer: Optimizer | None):
        self.net, self.opt = net, optimizer

    def forward(self, x: np.ndarray) -> tuple[list, list, np.ndarray]:
        """States s[0..L], pre-activations h[1..L] (h[0] is None), probabilities p."""
        net, L = self.net, self.net.L
        s, h = [x], [None]
        for k in range(1, L + 1):
            a = np.zeros((x.shape[0], net.sizes[k]), net.dtype)
            for p in net.incoming(k):
                a += p.scale * (s[p.src] @ net.W[p.name].T)
            if k in net.b:
                a += net.b[k]
            h.append(a)
            s.append(rho(a, net.activation))
        z = s[L] @ net.W["Wf"].T
        if L + 1 in net.b:
            z += net.b[L + 1]
        return s, h, softmax(z)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[2]

    def gradients(self, x: np.ndarray, y1h: np.ndarray) -> tuple[dict, np.ndarray]:
        """Minus the gradient of the mean cross-entropy w.r.t. every trained parameter."""
        net, L, B = self.net, self.net.L, x.shape[0]
        s, h, p = self.forward(x)
        delta = {L + 1: (y1h - p) / B}     # -dLoss/d(pre-activation), per layer
        grads, aux = bp_head_terms(net, s, y1h, B)   # auxiliary heads' weighted losses
        for k in range(L + 1, 0, -1):
            if k in aux:
                delta[k] = delta[k] + aux[k] if k in delta else aux[k]
            if k <= L:
                delta[k] = delta[k] * activation_derivative(s[k], h[k], net.activation)
            for pr in net.incoming(k):
                grads[pr.name] = pr.scale * (delta[k].T @ s[pr.src])
                if pr.src >= 1:
                    back = pr.scale * (delta[k] @ net.W[pr.name])
                    delta[pr.src] = delta[pr.src] + back if pr.src in delta else back
            if k in net.b:
                grads[f"b{k}"] = delta[k].sum(axis=0)
        return grads, p

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        net = self.net
        y1h = one_hot(y, net.sizes[-1], net.dtype)
        grads, p = self.gradients(x, y1h)
        self.opt.begin()
        for name, g in grads.items():
            self.opt.step(name, np.ascontiguousarray(g, dtype=net.dtype))
        return BatchStats(cross_entropy_sum(p, y), int((p.argmax(1) == y).sum()), 0.0, 0)


__all__ = ["BatchStats", "EPLearner", "BPLearner", "one_hot", "softmax"]

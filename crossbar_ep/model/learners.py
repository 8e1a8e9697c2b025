"""Equilibrium Propagation on the FRE-RNN, and the backpropagation twin of the same net.

Both learners expose ``train_batch(x, y) -> BatchStats`` and ``predict(x) -> p`` over the
same :class:`~crossbar_ep.model.network.Network` (layered, residual, random-graph or conv: the
net's layer map supplies the reads and the local signals), so EP and BP runs share data, init
and seed.  Updates follow the ascent convention (they point downhill on the cross-entropy
loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar_ep.model.activations import activation_derivative, rho, softmax
from crossbar_ep.model.heads import bp_head_terms
from crossbar_ep.model.network import Network
from crossbar_ep.model.operators import DigitalMatrix
from crossbar_ep.model.optim import Optimizer
from crossbar_ep.model.options import TrainingConfig
from crossbar_ep.model.settle import PhaseResult, Settler, layer_map


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


def _samples(x: np.ndarray, net: Network) -> np.ndarray:
    """x as (B, n_in) of the net's dtype; a clear error for any other shape."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != net.sizes[0]:
        from crossbar_ep.errors import DataError
        hint = " (one sample: x[None])" if x.ndim == 1 and x.size == net.sizes[0] else ""
        raise DataError(f"predict: x must be (samples, {net.sizes[0]}); got shape "
                        f"{x.shape}{hint}")
    return np.ascontiguousarray(x, dtype=net.dtype)


def clip_factor(grads, max_norm: float | None) -> float:
    """PyTorch's clip_grad_norm_ factor over all update arrays (1 without a limit)."""
    if not max_norm:
        return 1.0
    total = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
    return min(1.0, max_norm / (total + 1e-6))


class EPLearner:
    """Two-phase EP with local updates ``dW = mean((sb_k - s0_k) outer s0_j)``.

    Every trained operator learns from its local signals through
    :meth:`~crossbar_ep.model.operators.WeightOperator.update` (a digital matrix through the
    optimiser, a crossbar array through its pulse rule).  ``norm`` maps a projection (or bias
    ``b<k>``) to the divisor of its update: 1 for raw updates, the gain of the strongest path
    from a nudge source for normalised ones (the BP-gradient scale; default from
    ``training.update_norm``).  ``training.nudging`` centered (Laborieux et al. 2021): nudged
    phases at +beta_f and -beta_f from the free state and ``delta = (s+ - s-) / 2``, which
    cancels the O(beta_f) bias of the one-sided estimate.  ``training.readout_error``: the
    readout learns from y - p of the free phase or of the nudged end.
    ``training.grad_clip_norm``: the batch's digital updates are scaled down to that global
    L2 norm when above it.  With phase averaging in the settler the update uses the averaged
    states.  ``targets`` (optional) maps (x, y1h) to a target per head (distillation);
    ``weight_noise`` (optional, :mod:`crossbar_ep.model.weight_noise`) perturbs the digital
    matrices for each batch's phases (hardware-aware training).
    """

    def __init__(self, net: Network, settler: Settler, optimizer: Optimizer | None, *,
                 training: TrainingConfig = TrainingConfig(), norm: dict | None = None,
                 pulses=None, targets=None, weight_noise=None):
        self.net, self.settler, self.opt = net, settler, optimizer
        self.training = training
        self.centered = training.nudging == "centered"
        self.readout_error = training.readout_error
        self.clip_norm = training.grad_clip_norm
        self.targets = targets
        self.weight_noise = weight_noise   # hardware-aware training (model/weight_noise.py)
        self.layer_stats = None  # optional observer of (delta, updates) per batch
        self.pulses = pulses            # backend.PulseStats over the crossbar operators
        if norm is None:
            digital = training.update_norm == "normalised"
            norm = {k: (v if digital else 1.0) for k, v in net.norm.items()}
        self.norm = norm
        self.map = settler.map
        if optimizer is not None:
            net.set_optimizer(optimizer)
        self._bgrads: dict = {}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Output probabilities (B, n_out) of the free phase of x (B, n_in)."""
        return self.settler.free(_samples(x, self.net)).p

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
            neg = self.settler.nudged(free, y1h, sign=-1.0).used()[0]
            pos = nudged.used()[0]
            delta = {k: 0.5 * (pos[k] - neg[k]) for k in range(1, L + 1)}
        else:
            pos, s0 = nudged.used()[0], free.used()[0]
            delta = {k: pos[k] - s0[k] for k in range(1, L + 1)}
        end = nudged if self.readout_error == "nudged" else free
        probs = dict(free.heads or {})          # auxiliary heads learn at the free state
        probs[L + 1] = end.p
        for e, p in probs.items():
            delta[e] = (y1h[e] if isinstance(y1h, dict) else y1h) - p
        return free, nudged, delta

    def local_signals(self, x: np.ndarray, y1h: np.ndarray) -> tuple[dict, PhaseResult]:
        """name -> (pre-synaptic signal, post-synaptic signal, scale) of every trained
        operator (rows, n_in), (rows, n_out), as its ``update`` takes them, and the free-phase
        result."""
        free, nudged, delta = self.phases(x, y1h)
        self.last_nudged = nudged
        B, lm = x.shape[0], self.map
        e0 = free.used()[1]
        local = {p.name: (lm.local_pre(p, e0, free), lm.local_delta(p, delta[p.dst]),
                          1.0 / (B * self.norm[p.name]))
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
        for k, b in self.net.b.items():
            rows = self.map.bias_rows(k, self.last_delta[k])
            g = self._bgrads.get(k)
            if g is None:
                g = self._bgrads[k] = np.empty_like(b)
            np.sum(rows, axis=0, out=g)
            g *= 1.0 / (B * self.norm[f"b{k}"])
            out[f"b{k}"] = g
        return out

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        net = self.net
        y1h = one_hot(y, net.sizes[-1], net.dtype)
        if self.targets is not None:
            y1h = self.targets(x, y1h)
        noisy = self.weight_noise is not None and self.weight_noise.active
        if noisy:
            self.weight_noise.perturb(net, self.opt.t)
        try:
            local, free = self.local_signals(x, y1h)
        finally:
            if noisy:
                self.weight_noise.restore(net)
        if self.layer_stats is not None:
            self.layer_stats.observe(self.last_delta, local)
        self.opt.begin()
        bias = self._bias_updates(x.shape[0])
        if self.clip_norm:
            digital = {n: net.ops[n].local_gradient(*v).copy() for n, v in local.items()
                       if isinstance(net.ops[n], DigitalMatrix)}
            f = clip_factor([*digital.values(), *bias.values()], self.clip_norm)
            for name, v in local.items():
                if name in digital:
                    net.ops[name].step(digital[name] * f if f != 1.0 else digital[name])
                else:
                    net.ops[name].update(*v)
            bias = {n: (g * f).astype(net.dtype, copy=False) for n, g in bias.items()}
        else:
            for name, (pre, d, scale) in local.items():
                net.ops[name].update(pre, d, scale)
        for name, g in bias.items():
            self.opt.step(name, g)
        nudged = self.last_nudged
        return BatchStats(cross_entropy_sum(free.p, y), int((free.p.argmax(1) == y).sum()),
                          free.residual, free.steps, nudged.residual, nudged.steps,
                          free.time_tau, nudged.time_tau)


class BPLearner:
    """Backpropagation through the feed-forward net the FRE-RNN tends to as beta_i -> 0:
    ``s_k = rho(sum of the reads of the layers below + b_k)`` (conv nets: convolutions of the
    pooled maps), softmax readout.  ``training.grad_clip_norm`` as for :class:`EPLearner`."""

    settler = None   # no settling and no crossbar arrays: the BP twin is digital
    pulses = None

    def __init__(self, net: Network, optimizer: Optimizer | None, *,
                 training: TrainingConfig = TrainingConfig()):
        self.net, self.opt, self.training = net, optimizer, training
        self.clip_norm = training.grad_clip_norm
        self.map = layer_map(net, False)

    def forward(self, x: np.ndarray) -> tuple[list, list, np.ndarray]:
        """States s[0..L], pre-activations h[1..L] (h[0] is None), probabilities p."""
        return self._forward(x)[:3]

    def _forward(self, x: np.ndarray):
        """(states, pre-activations, probabilities, emitted signals, switches, pre signal per
        projection)."""
        net, L, lm = self.net, self.net.L, self.map
        W = net.W
        s, h, e, sw, pre = [x], [None], [x], [None], {}
        for k in range(1, L + 2):
            a = None
            for p in net.incoming(k):
                r, pre[p.name] = self._read(p, e[p.src], W[p.name])
                r = p.scale * r
                a = r if a is None else a + r
            if k in net.b:
                lm.add_bias(k, a)
            if k == L + 1:
                return s, h, softmax(a), e, sw, pre
            h.append(a)
            s.append(rho(a, net.activation))
            em, idx = self._emit(k, s[k])
            e.append(em)
            sw.append(idx)

    def _read(self, p, e_src, W):
        if self.map.emits_states:
            return e_src @ W.T, e_src
        return self.map.bp_read(p, e_src, W)

    def _emit(self, k, s):
        return (s, None) if self.map.emits_states else self.map.bp_emit(k, s)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Output probabilities (B, n_out) of the feed-forward pass of x (B, n_in)."""
        return self._forward(_samples(x, self.net))[2]

    def gradients(self, x: np.ndarray, y1h: np.ndarray) -> tuple[dict, np.ndarray]:
        """Minus the gradient of the mean cross-entropy w.r.t. every trained parameter."""
        net, L, B, lm = self.net, self.net.L, x.shape[0], self.map
        s, h, p, e, sw, pre = self._forward(x)
        W = net.W
        ge = {L + 1: (y1h - p) / B}   # -dLoss/d(emitted signal); L + 1: the logits
        grads, aux = bp_head_terms(net, e, y1h, B)   # auxiliary heads' weighted losses
        for k in range(L + 1, 0, -1):
            if k in aux:
                ge[k] = ge[k] + aux[k] if k in ge else aux[k]
            if k not in ge:
                continue
            if k <= L:
                g = ge[k] if lm.emits_states else lm.bp_unemit(k, ge[k], sw[k])
                delta = g * activation_derivative(s[k], h[k], net.activation)
            else:
                delta = ge[k]
            for pr in net.incoming(k):
                grads[pr.name] = pr.scale * (lm.local_delta(pr, delta).T @ pre[pr.name])
                if pr.src >= 1:
                    M = self.backward_matrix(pr, W)
                    back = pr.scale * (delta @ M if lm.emits_states else
                                       lm.bp_read_transposed(pr, delta, M))
                    ge[pr.src] = ge[pr.src] + back if pr.src in ge else back
            if k in net.b:
                grads[f"b{k}"] = lm.bias_rows(k, delta).sum(axis=0)
        return grads, p

    def backward_matrix(self, p, W: dict) -> np.ndarray:
        """The matrix the error of projection p's destination goes back through: W itself
        (backpropagation; feedback alignment overrides it)."""
        return W[p.name]

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        net = self.net
        y1h = one_hot(y, net.sizes[-1], net.dtype)
        grads, p = self.gradients(x, y1h)
        f = clip_factor(list(grads.values()), self.clip_norm)
        self.opt.begin()
        for name, g in grads.items():
            self.opt.step(name, np.ascontiguousarray(g * f if f != 1.0 else g,
                                                     dtype=net.dtype))
        return BatchStats(cross_entropy_sum(p, y), int((p.argmax(1) == y).sum()), 0.0, 0)


__all__ = ["BatchStats", "EPLearner", "BPLearner", "one_hot", "softmax", "clip_factor"]

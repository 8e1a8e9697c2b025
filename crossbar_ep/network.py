"""FRE-RNN topology and parameters: layers, forward projections, feedback paths, init.

Layer indices: 0 is the input, 1..L the hidden layers (the recurrent core), L+1 the softmax
readout.  A forward projection ``j -> k`` holds a matrix of shape (n_k, n_j) and adds
``scale * s_j @ W.T`` to ``h_k``.  A feedback path ``k -> j`` (k > j) adds
``beta_j * s_k @ M`` to ``h_j`` with M of shape (n_k, n_j): the tied forward matrix of the
projection ``j -> k`` (symmetric feedback, a transposed read) or a fixed random matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import Config


@dataclass(frozen=True)
class Projection:
    """A trained forward matrix ``src -> dst`` (W[name] has shape (n_dst, n_src))."""

    name: str
    src: int
    dst: int
    scale: float = 1.0


@dataclass(frozen=True)
class Feedback:
    """A feedback path ``src -> dst`` (src > dst) with gain ``scale`` (beta of dst).

    ``tied`` names the forward projection ``dst -> src`` whose matrix it reads transposed;
    ``None`` means a fixed random matrix stored in ``Network.fixed[name]``.
    """

    name: str
    src: int
    dst: int
    scale: float
    tied: str | None


@dataclass
class Network:
    """Sizes, links and parameter arrays of one FRE-RNN (shared by EP and its BP twin)."""

    sizes: tuple                 # (n_in, n_1, ..., n_L, n_out)
    projections: list            # forward, trained; includes W0 (0->1) and Wf (L->L+1)
    feedbacks: list              # hidden-layer feedback paths, incl. residual partners
    nudge_tied: bool             # nudge through W_f^T (True) or a fixed random matrix
    beta_f: float
    activation: str
    W: dict = field(default_factory=dict)      # name -> (n_dst, n_src)
    b: dict = field(default_factory=dict)      # layer index -> (n_layer,), if biases learned
    fixed: dict = field(default_factory=dict)  # random feedback name -> (n_src, n_dst)
    lr: dict = field(default_factory=dict)     # projection name / 'b<k>' -> learning rate
    norm: dict = field(default_factory=dict)   # projection name / 'b<k>' -> EP normaliser

    @property
    def L(self) -> int:
        return len(self.sizes) - 2

    @property
    def dtype(self):
        return self.W["W0"].dtype

    def incoming(self, k: int) -> list:
        """Forward projections entering hidden/output layer k, W0 first."""
        return [p for p in self.projections if p.dst == k]

    def feedback_into(self, k: int) -> list:
        return [f for f in self.feedbacks if f.dst == k]

    def feedback_matrix(self, f: Feedback) -> np.ndarray:
        """The (n_src, n_dst) matrix a feedback path reads."""
        return self.W[f.tied] if f.tied is not None else self.fixed[f.name]

    def nudge_matrix(self) -> np.ndarray:
        """(n_out, n_L) matrix carrying the output error into the top hidden layer."""
        return self.W["Wf"] if self.nudge_tied else self.fixed["Bf"]

    def trainable(self) -> list:
        """(key, array) of every trained parameter, in a fixed order."""
        items = [(p.name, self.W[p.name]) for p in self.projections]
        items += [(f"b{k}", self.b[k]) for k in sorted(self.b)]
        return items


def glorot(rng: np.random.Generator, n_out: int, n_in: int, dtype) -> np.ndarray:
    """Glorot-uniform matrix U(+-sqrt(6 / (n_in + n_out))) of shape (n_out, n_in)."""
    lim = math.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-lim, lim, size=(n_out, n_in)).astype(dtype)


def agt_links(L: int, p: float, seed: int) -> tuple[list, list]:
    """Non-adjacent AGT links: (forward pairs a<b, feedback pairs a>b), drawn independently."""
    g = np.random.default_rng(seed)
    fwd, fb = [], []
    for a in range(1, L + 1):
        for b in range(1, L + 1):
            if abs(a - b) >= 2 and g.random() < p:
                (fwd if a < b else fb).append((a, b))
    return fwd, fb


def _best_gain(L: int, feedbacks: list, beta_f: float) -> dict:
    """For each hidden layer, the largest product of gains along feedback paths from the
    nudge: beta_f * prod(beta) over the hops (the EP update's natural scale)."""
    gain = {L: beta_f}
    for _ in range(L):  # Bellman-Ford on a DAG of at most L layers
        for f in feedbacks:
            if f.src in gain:
                g = gain[f.src] * f.scale
                if g > gain.get(f.dst, 0.0):
                    gain[f.dst] = g
    return gain


def build_network(cfg: Config, n_in: int, n_out: int, rng: np.random.Generator) -> Network:
    """Create the topology of ``cfg`` and draw Glorot-uniform weights from ``rng``.

    Forward matrices are drawn first (W0, W1, ..., residual links, Wf), then fixed random
    feedback matrices, so an EP net and its BP twin share their forward init.
    """
    m, t = cfg.model, cfg.training
    dtype = np.dtype(t.dtype)
    L = cfg.n_hidden
    sizes = (n_in, *m.hidden, n_out)
    beta = cfg.beta_per_layer()
    lrs = cfg.lr_per_matrix()

    projections = [Projection("W0", 0, 1)]
    projections += [Projection(f"W{k}", k, k + 1, m.alpha) for k in range(1, L)]
    partnered = list(cfg.residual_pairs())
    extra_fb: list = []
    if m.residual.kind == "agt":
        fwd, extra_fb = agt_links(L, m.residual.p, m.residual.seed)
        partnered = []
        projections += [Projection(f"R{a}_{b}", a, b) for a, b in fwd]
    else:
        projections += [Projection(f"R{a}_{b}", a, b) for a, b in partnered]
    projections.append(Projection("Wf", L, L + 1))

    symmetric = m.feedback == "symmetric"
    feedbacks = []
    for k in range(1, L):  # adjacent feedback k+1 -> k
        feedbacks.append(Feedback(f"B{k}", k + 1, k, beta[k - 1], f"W{k}" if symmetric else None))
    for a, b in partnered:
        feedbacks.append(Feedback(f"BR{b}_{a}", b, a, beta[a - 1],
                                  f"R{a}_{b}" if symmetric else None))
    for a, b in extra_fb:  # AGT feedback a -> b (a > b), random and fixed
        feedbacks.append(Feedback(f"BR{a}_{b}", a, b, beta[b - 1], None))

    net = Network(sizes, projections, feedbacks, symmetric, t.beta_f, m.activation)
    for p in projections:
        net.W[p.name] = glorot(rng, sizes[p.dst], sizes[p.src], dtype)
    for f in feedbacks:
        if f.tied is None:
            net.fixed[f.name] = glorot(rng, sizes[f.src], sizes[f.dst], dtype)
    if not symmetric:
        net.fixed["Bf"] = glorot(rng, n_out, sizes[L], dtype)
    if m.bias:
        for k in range(1, L + 2):
            net.b[k] = np.zeros(sizes[k], dtype)

    gain = _best_gain(L, feedbacks, t.beta_f)
    for p in projections:
        net.lr[p.name] = lrs[p.dst - 1] if p.dst <= L else lrs[L]
        net.norm[p.name] = 1.0 if p.dst == L + 1 else gain.get(p.dst, 0.0)
    for k in net.b:
        net.lr[f"b{k}"] = lrs[k - 1]
        net.norm[f"b{k}"] = 1.0 if k == L + 1 else gain.get(k, 0.0)
    return net

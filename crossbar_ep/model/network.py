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


@dataclass(frozen=True)
class Block:
    """One coupling of the settle graph: layer ``dst`` receives ``gain * read(src)`` of the
    operator ``op`` (forward, or transposed when ``transposed``).

    Sources are states (0 the input, 1..L hidden layers) or the error of an output head
    (index L+1: ``y - p``); destinations are hidden layers 1..L or the head's logits (L+1).
    A block from the input is the input drive (read once per batch); a block from an error is
    a nudge source (present in nudged phases only); a block into L+1 is the readout.
    """

    op: str
    src: int
    dst: int
    gain: float = 1.0
    transposed: bool = False


@dataclass
class Network:
    """Sizes, links and weight operators of one FRE-RNN (shared by EP and its BP twin).

    ``ops`` maps a name to a :class:`~crossbar_ep.model.operators.WeightOperator`: the trained
    projections (``projections``) and the fixed random feedback matrices.  ``blocks`` is the
    settle graph over them.  ``W`` and ``fixed`` are dense views of the operators, for tools
    that want plain matrices (BP, diagnostics, traces, netlists).
    """

    sizes: tuple                 # (n_in, n_1, ..., n_L, n_out)
    projections: list            # forward, trained; includes W0 (0->1) and Wf (L->L+1)
    feedbacks: list              # hidden-layer feedback paths, incl. residual partners
    nudge_tied: bool             # nudge through W_f^T (True) or a fixed random matrix
    beta_f: float
    activation: str
    ops: dict = field(default_factory=dict)    # name -> WeightOperator
    head_sizes: dict = field(default_factory=dict)  # auxiliary head index (> L + 1) -> classes
    blocks: list = field(default_factory=list)  # the settle graph (list of Block)
    b: dict = field(default_factory=dict)      # layer index -> (n_layer,), if biases learned
    lr: dict = field(default_factory=dict)     # projection name / 'b<k>' -> learning rate
    norm: dict = field(default_factory=dict)   # projection name / 'b<k>' -> EP normaliser
    head_weight: dict = field(default_factory=dict)  # aux head index -> loss weight (BP twin)
    linear_heads: set = field(default_factory=set)   # aux heads without softmax (feature hints)

    @property
    def L(self) -> int:
        return len(self.sizes) - 2

    @property
    def dtype(self):
        return self.ops[self.projections[0].name].dtype

    @property
    def W(self) -> dict:
        """Trained projection name -> dense (n_dst, n_src) view of its operator."""
        return {p.name: self.ops[p.name].dense() for p in self.projections}

    @property
    def fixed(self) -> dict:
        """Fixed random feedback name -> its (n_src, n_dst) matrix."""
        trained = {p.name for p in self.projections}
        return {n: op.dense() for n, op in self.ops.items() if n not in trained}

    def emitted_size(self, k: int) -> int:
        """Width of what layer k emits to forward reads and readouts (its state)."""
        return self.sizes[k]

    def init_readout(self, rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
        """Initial weights (n_out, n_in) of a readout added later (a head): Glorot-uniform."""
        return glorot(rng, n_out, n_in, self.dtype)

    def incoming(self, k: int) -> list:
        """Forward projections entering hidden/output layer k, W0 first."""
        return [p for p in self.projections if p.dst == k]

    def feedback_matrix(self, f: "Feedback") -> np.ndarray:
        """The (n_src, n_dst) matrix a feedback path reads."""
        return self.ops[f.tied or f.name].dense()

    def nudge_matrix(self) -> np.ndarray:
        """(n_out, n_L) matrix carrying the output error into the top hidden layer."""
        return self.ops["Wf" if self.nudge_tied else "Bf"].dense()

    def trainable(self) -> list:
        """(key, array) of every trained parameter, in a fixed order."""
        items = [(p.name, self.ops[p.name].dense()) for p in self.projections]
        items += [(f"b{k}", self.b[k]) for k in sorted(self.b)]
        return items

    def attach(self, name: str, op) -> None:
        """Replace the operator ``name`` (e.g. put a projection on a crossbar array)."""
        old = self.ops[name]
        if op.shape != old.shape:
            raise ValueError(f"{name}: operator shape {op.shape}, the network needs {old.shape}")
        op.optimizer = getattr(old, "optimizer", None)
        self.ops[name] = op

    def set_optimizer(self, optimizer) -> None:
        """Route the digital updates of every trained operator through ``optimizer``."""
        for p in self.projections:
            op = self.ops[p.name]
            if hasattr(op, "optimizer"):
                op.optimizer = optimizer


def glorot(rng: np.random.Generator, n_out: int, n_in: int, dtype) -> np.ndarray:
    """Glorot-uniform matrix U(+-sqrt(6 / (n_in + n_out))) of shape (n_out, n_in)."""
    lim = math.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-lim, lim, size=(n_out, n_in)).astype(dtype)


def agt_links(L: int, p: float, seed: int, legacy: bool = False) -> tuple[list, list]:
    """Non-adjacent AGT links: (forward pairs a<b, feedback pairs a>b), drawn independently.

    ``legacy`` reproduces the authors' generator: NumPy's legacy global state seeded with
    ``seed`` and one ``rand()`` per ordered pair (i, j), i != j, in row-major order, adjacent
    pairs included (they consume a draw; adjacent links exist anyway).  The global state is
    restored afterwards."""
    fwd, fb = [], []
    if legacy:
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            for a in range(1, L + 1):
                for b in range(1, L + 1):
                    if a != b and np.random.rand() < p and abs(a - b) >= 2:
                        (fwd if a < b else fb).append((a, b))
        finally:
            np.random.set_state(saved)
        return fwd, fb
    g = np.random.default_rng(seed)
    for a in range(1, L + 1):
        for b in range(1, L + 1):
            if abs(a - b) >= 2 and g.random() < p:
                (fwd if a < b else fb).append((a, b))
    return fwd, fb


def make_network(sizes, seed: np.random.Generator | int = 0, *, alpha: float = 1.0,
                 beta_i=0.01, beta_f: float = 0.1, feedback: str = "symmetric",
                 activation: str = "tanh", bias: bool = False, residual=(),
                 random_feedback=None, lr=0.01, dtype="float32",
                 feedback_gain: str = "uniform") -> Network:
    """An FRE-RNN from layer sizes ``(n_in, n_1, ..., n_L, n_out)`` with digital operators,
    weights drawn from ``seed`` (an int or a Generator).

    alpha: forward scale of W_1..W_{L-1}; beta_i: feedback gain per hidden layer (one value
    or L); beta_f: output nudge gain; feedback: ``symmetric`` (tied, transposed reads) or
    ``random`` (fixed Glorot matrices); residual: forward skip links (a, b), a < b, 1-based
    hidden layers, each with a feedback partner b -> a; random_feedback: extra fixed random
    feedback links (a, b), a > b (AGT graphs; then residual links get no partner); lr: one
    learning rate or one per matrix W_0..W_{L-1}, W_f; feedback_gain: ``uniform`` (a skip
    feedback link into layer a has gain beta_a, as the authors' graph code) or ``graded``
    (the product of the gains of the chain it bypasses, so EP tends to the reference
    gradient, docs/model.md).  Forward matrices are drawn first
    (W0, W1, ..., residual links, Wf), then the fixed feedback matrices, so an EP net and its
    BP twin share their forward init.
    """
    from crossbar_ep.model.normalisation import graded_gain, normalisers
    from crossbar_ep.model.operators import DigitalMatrix

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    sizes = tuple(int(n) for n in sizes)
    L = len(sizes) - 2
    if L < 1:
        raise ValueError("sizes: give (n_in, n_1, ..., n_L, n_out) with at least one hidden layer")
    beta = tuple(beta_i) if np.ndim(beta_i) else (float(beta_i),) * L
    lrs = tuple(lr) if np.ndim(lr) else (float(lr),) * (L + 1)
    residual = [tuple(p) for p in (residual or ())]

    projections = [Projection("W0", 0, 1)]
    projections += [Projection(f"W{k}", k, k + 1, alpha) for k in range(1, L)]
    projections += [Projection(f"R{a}_{b}", a, b) for a, b in residual]
    projections.append(Projection("Wf", L, L + 1))
    partnered = residual if random_feedback is None else []

    symmetric = feedback == "symmetric"
    feedbacks = []
    for k in range(1, L):  # adjacent feedback k+1 -> k
        feedbacks.append(Feedback(f"B{k}", k + 1, k, beta[k - 1], f"W{k}" if symmetric else None))
    graded = feedback_gain == "graded"
    for a, b in partnered:
        g = graded_gain(a, b, beta, alpha, 1.0 if symmetric else None) if graded else beta[a - 1]
        feedbacks.append(Feedback(f"BR{b}_{a}", b, a, g, f"R{a}_{b}" if symmetric else None))
    for a, b in random_feedback or ():  # AGT feedback a -> b (a > b), random and fixed
        g = graded_gain(b, a, beta, alpha, None) if graded else beta[b - 1]
        feedbacks.append(Feedback(f"BR{a}_{b}", a, b, g, None))

    net = Network(sizes, projections, feedbacks, symmetric, float(beta_f), activation)
    for p in projections:
        net.ops[p.name] = DigitalMatrix(glorot(rng, sizes[p.dst], sizes[p.src], dtype), p.name)
    for f in feedbacks:
        if f.tied is None:
            net.ops[f.name] = DigitalMatrix(glorot(rng, sizes[f.src], sizes[f.dst], dtype),
                                            f.name, trainable=False)
    if not symmetric:
        net.ops["Bf"] = DigitalMatrix(glorot(rng, sizes[L + 1], sizes[L], dtype), "Bf",
                                      trainable=False)
    if bias:
        for k in range(1, L + 2):
            net.b[k] = np.zeros(sizes[k], dtype)

    # the settle graph: input drive, forward (incl. residual), feedback, readout, nudge
    net.blocks = [Block(p.name, p.src, p.dst, p.scale) for p in projections]
    net.blocks += [Block(f.tied or f.name, f.src, f.dst, f.scale, True) for f in feedbacks]
    net.blocks.append(Block("Wf" if symmetric else "Bf", L + 1, L, net.beta_f, True))

    for p in projections:
        net.lr[p.name] = lrs[p.dst - 1] if p.dst <= L else lrs[L]
    for k in net.b:
        net.lr[f"b{k}"] = lrs[k - 1]
    net.norm = normalisers(net)
    return net

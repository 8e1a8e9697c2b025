"""The layer-map protocol: what the settle engine asks of a network's layers.

The engine (:class:`crossbar_ep.model.settle.Settler`) owns time: integrators, the stop rule,
phase averaging, observers, one-sided and centered nudging, readout and head errors, readout
reads.  A layer map owns space: for each hidden layer k the right-hand side
``f_k(s) = rho(h_k(s))`` of the synchronous map ``s <- f(s)`` (the ODE
``tau ds/dt = -s + f(s)``), as the sum of its incoming blocks' reads, and the signals each
operator's local update sees.  States are flat arrays (B, n_k), C-contiguous, one per hidden
layer; what a layer *emits* to its forward consumers and readouts is the state itself in a
dense net and the pooled map in a conv net.

Maps: :class:`~crossbar_ep.model.dense_layers.DenseLayers` (one stacked GEMM per layer, or
one read per block) and :class:`~crossbar_ep.model.conv_layers.ConvLayers` (convolutions,
2 x 2 max-pooling with switches, unpooling of feedback and nudges).  A new layer type is one
new map; the engine and the learners never ask which map they drive.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.model.activations import softmax


class Buffers:
    """Per-batch-size work arrays every map provides: states ``S`` and right-hand sides ``H``
    (layer -> (B, n_k)), the predictor's copy ``S0`` (Heun and adaptive methods), the running
    sums ``A`` of averaged states and ``E`` of averaged emitted signals (phase averaging)."""

    def __init__(self, layers, sizes: dict, B: int, dtype, predictor: bool):
        self.B = B
        self.H = {k: np.zeros((B, sizes[k]), dtype) for k in layers}
        self.S = {k: np.zeros((B, sizes[k]), dtype) for k in layers}
        self.S0 = {k: np.zeros((B, sizes[k]), dtype) for k in layers} if predictor else {}
        self.A: dict = {}
        self.E: dict = {}


class LayerMap:
    """The protocol (and shared head logic) of a layer map over one network ``net``.

    Attributes every map sets: ``net``, ``L``, ``layers`` (1..L), ``size`` (layer or head
    index -> width of its state or output), ``heads`` (head index -> readout blocks into it,
    L + 1 is the output), ``nudging`` (heads whose error nudges a hidden layer), and
    ``emits_states`` (True when a layer emits its state unchanged).
    """

    emits_states = True

    # ------------------------------------------------------------------ weights
    def refresh(self) -> None:
        """Rebuild anything cached from the operators' weights."""

    def sync(self) -> None:
        """Rebuild what changed since the last phase (operators' ``version``)."""

    # ------------------------------------------------------------------ phases
    def buffers(self, B: int) -> Buffers:
        raise NotImplementedError

    def drive_input(self, buf: Buffers, x: np.ndarray) -> dict:
        """Read what is constant over a batch (the input drive) of x (B, n_in); returns it
        (and anything the batch's updates reuse) for the batch's later phases."""
        raise NotImplementedError

    def load_batch(self, buf: Buffers, batch: dict) -> None:
        """Put back what :meth:`drive_input` returned (a nudged phase of that batch)."""
        raise NotImplementedError

    def load_state(self, buf: Buffers, s: list | None) -> None:
        """Start a phase from states ``s`` ([x, s_1, ..., s_L]) or, with None, from the map's
        free-phase start."""
        raise NotImplementedError

    def mirror(self, buf: Buffers, k: int) -> None:
        """Layer k's state ``buf.S[k]`` changed (the engine wrote it)."""

    def eval(self, buf: Buffers, nudged: bool, mirror: bool = False) -> None:
        """``buf.H[k] = f_k(buf.S)`` for every hidden layer (nudge sources included when
        ``nudged``); ``mirror``: the discrete map, where H becomes the next state."""
        raise NotImplementedError

    def set_error(self, buf: Buffers, y, probs: dict, factor: float = 1.0) -> None:
        """Nudge sources: each nudging head e gets ``factor * (y_e - p_e)``; ``y`` is one target
        (B, n_out) for every head or a dict head index -> target."""
        raise NotImplementedError

    def emit(self, k: int, s: np.ndarray) -> np.ndarray:
        """What layer k emits to forward reads and readouts, flat (B, m_k)."""
        return s

    def emitted(self, s: list) -> list:
        """[x, e_1, ..., e_L] of states [x, s_1, ..., s_L]."""
        return s if self.emits_states else [s[0]] + [self.emit(k, s[k]) for k in self.layers]

    # ------------------------------------------------------------------ readouts
    def read_block(self, b, v: np.ndarray, out: np.ndarray, accumulate: bool) -> None:
        op = self.net.ops[b.op]
        if b.transposed:
            op.read_transposed_into(v, out, b.gain, accumulate)
        else:
            op.read_into(v, out, b.gain, accumulate)

    def head(self, e: int, S, reads: int = 1) -> np.ndarray:
        """Softmax probabilities of head ``e`` from the states ``S`` (layer -> (B, n_k)); the
        plain read for a linear head (a feature hint).  ``reads`` > 1: the mean output of that
        many reads (each with its own read noise) before the softmax."""
        net = self.net
        blocks = self.heads[e]
        src = {b.src: self.emit(b.src, S[b.src]) for b in blocks}
        z = np.empty((src[blocks[0].src].shape[0], self.size[e]), net.dtype)
        for r in range(reads):
            for i, b in enumerate(blocks):
                self.read_block(b, src[b.src], z, accumulate=i > 0 or r > 0)
        if reads > 1:
            z *= 1.0 / reads
        if e in net.b:
            z += net.b[e]
        return z if e in net.linear_heads else softmax(z)

    def probs(self, S) -> dict:
        """Probabilities of every head that nudges (head index -> (B, n_e))."""
        return {e: self.head(e, S) for e in self.nudging}

    # ------------------------------------------------------------------ learning signals
    def local_pre(self, p, emitted: list, phase) -> np.ndarray:
        """Pre-synaptic signal (rows, n_in) of projection ``p`` as its operator's update takes
        it, from the emitted signals [x, e_1, ..., e_L] the update uses."""
        return emitted[p.src]

    def local_delta(self, p, delta: np.ndarray) -> np.ndarray:
        """Post-synaptic signal (rows, n_out) of projection ``p`` from its destination's
        nudged-minus-free displacement (or a head's error) (B, n_dst)."""
        return delta

    def bias_rows(self, k: int, delta: np.ndarray) -> np.ndarray:
        """Rows whose sum over axis 0 is the update of bias ``b<k>``."""
        return delta

    def add_bias(self, k: int, a: np.ndarray) -> None:
        """a += b<k> in place, a (B, n_k)."""
        self.bias_rows(k, a)[...] += self.net.b[k]

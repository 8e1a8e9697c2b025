"""The dense layer map: every hidden layer gathers its inputs with ONE GEMM per step.

The states that feed layer k (layer k-1 forward, layer k+1 and residual partners as feedback,
and in the nudged phase the heads' errors) are kept side by side in an input buffer ``X_k``
of shape (B, sum n_src), and the matching blocks ``alpha W^T``, ``beta_k W``, ``beta_f W_f``
are stacked in ``M_k`` of shape (sum n_src, n_k).  So the sum over incoming paths happens
inside BLAS, only the blocks the topology has are multiplied (no dense (L n) x (L n)
coupling matrix), the input drive ``W_0 x`` is computed once per batch, and the activation is
applied in place.  A layer fed by an operator whose reads are not exact linear maps (a
crossbar array with periphery, wires or an I-V law) sums one read per block instead.

Shapes: states (B, n_k) C-contiguous, weights as in :mod:`crossbar_ep.model.network`.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.model.activations import activate
from crossbar_ep.model.layer_map import Buffers, LayerMap
from crossbar_ep.model.network import Block, Network


class DenseBuffers(Buffers):
    """Dense work arrays: input buffers X_k, the input drive D_k of the layers that have one,
    and the column blocks of X that mirror each layer's state."""

    def __init__(self, lm: "DenseLayers", B: int, predictor: bool):
        net, dt = lm.net, lm.net.dtype
        super().__init__(lm.layers, net.sizes, B, dt, predictor)
        self.X = {k: np.zeros((B, lm.width_nudged[k]), dt) for k in lm.layers
                  if lm.width_nudged[k] > 0}
        self.D = {k: np.zeros((B, net.sizes[k]), dt) for k in lm.drive}
        # layers summed read by read take their sources from S directly: nothing mirrored
        self.copies = {k: tuple(self.X[t][:, off:off + net.sizes[k]]
                                for t, off in lm.slots[k] if t not in lm.read_layers)
                       for k in lm.layers}


class DenseLayers(LayerMap):
    """The layer map of a layered, residual or random-graph FRE-RNN (:class:`Network`).

    The stacked matrices are rebuilt from the operators' dense views whenever an operator's
    ``version`` changes, so they never go stale (:meth:`refresh` forces a rebuild, e.g. after
    writing into ``net.W`` by hand)."""

    def __init__(self, net: Network, predictor: bool = False):
        self.net, self.predictor = net, predictor
        self.L = L = net.L
        self.layers = list(range(1, L + 1))
        ops = net.ops
        sizes = self.size = {**dict(enumerate(net.sizes)), **net.head_sizes}
        # incoming blocks per hidden layer: state sources first, error (nudge) sources last
        self.inc = {k: sorted((b for b in net.blocks if b.dst == k and b.src >= 1),
                              key=lambda b: b.src > L) for k in self.layers}
        self.drive = {k: [b for b in net.blocks if b.dst == k and b.src == 0]
                      for k in self.layers}
        self.drive = {k: v for k, v in self.drive.items() if v}
        # heads: readout blocks into index e > L; the error y_e - p_e of head e is source e
        self.heads = {e: [b for b in net.blocks if b.dst == e]
                      for e in sorted({b.dst for b in net.blocks if b.dst > L})}
        self.offsets, self.width_free, self.width_nudged = {}, {}, {}
        for k in self.layers:
            off, offs, free = 0, [], None
            for b in self.inc[k]:
                if b.src > L and free is None:
                    free = off
                offs.append(off)
                off += sizes[b.src]
            self.offsets[k] = offs
            self.width_nudged[k] = off
            self.width_free[k] = off if free is None else free
        # where each state / error is copied: source -> [(target layer, column offset)]
        self.slots: dict = {}
        for k in self.layers:
            for b, off in zip(self.inc[k], self.offsets[k]):
                self.slots.setdefault(b.src, []).append((k, off))
        for k in self.layers:
            self.slots.setdefault(k, [])
        self.nudging = [e for e in self.heads if e in self.slots]
        # layers summed read by read (an operator whose reads are not exact linear maps)
        self.read_layers = {k for k in self.layers
                            if not all(ops[b.op].exact_linear for b in self.inc[k])}
        self.M: dict = {}
        self._seen: dict = {}
        self._buffers: dict = {}
        self.refresh()
        self.sync()

    # ------------------------------------------------------------------ weights
    def _stack(self, k: int, i: int) -> None:
        b, off = self.inc[k][i], self.offsets[k][i]
        op = self.net.ops[b.op]
        W = op.dense()
        np.multiply(W if b.transposed else W.T, b.gain,
                    out=self.M[k][off:off + self.size[b.src]])
        self._seen[(k, i)] = op.version

    def refresh(self) -> None:
        """Re-stack every coupling block from the operators' dense views."""
        for k in self.layers:
            if k in self.read_layers or not self.inc[k]:
                continue
            if k not in self.M:
                self.M[k] = np.empty((self.width_nudged[k], self.net.sizes[k]), self.net.dtype)
            for i in range(len(self.inc[k])):
                self._stack(k, i)

    def sync(self) -> None:
        """Re-stack the blocks whose operator changed since they were stacked, and note which
        stacked blocks have read observers (energy meters) to tell about their reads."""
        ops = self.net.ops
        for (k, i), seen in self._seen.items():
            if ops[self.inc[k][i].op].version != seen:
                self._stack(k, i)
        self._observed = {k: [(b, off) for b, off in zip(self.inc[k], self.offsets[k])
                              if ops[b.op].observers]
                          for k in self.layers if k not in self.read_layers}

    def buffers(self, B: int) -> DenseBuffers:
        buf = self._buffers.get(B)
        if buf is None:
            if len(self._buffers) > 4:
                self._buffers.clear()
            buf = self._buffers[B] = DenseBuffers(self, B, self.predictor)
        return buf

    # ------------------------------------------------------------------ phases
    def drive_input(self, buf: DenseBuffers, x: np.ndarray) -> dict:
        """Input drive (e.g. W_0 x, plus the layer's bias), computed once per batch; returns
        a copy for the batch's later phases."""
        for k, blocks in self.drive.items():
            D = buf.D[k]
            for i, b in enumerate(blocks):
                self.read_block(b, x, D, accumulate=i > 0)
            if k in self.net.b:
                D += self.net.b[k]
        return {"drive": {k: D.copy() for k, D in buf.D.items()}}

    def load_batch(self, buf: DenseBuffers, batch: dict) -> None:
        for k, D in batch["drive"].items():
            np.copyto(buf.D[k], D)

    def load_state(self, buf: DenseBuffers, s: list | None) -> None:
        """States ``s`` or, with None, zeros (the free phase's start)."""
        for k in self.layers:
            if s is None:
                buf.S[k].fill(0.0)
            else:
                np.copyto(buf.S[k], s[k])
            self.mirror(buf, k)

    def mirror(self, buf: DenseBuffers, k: int) -> None:
        for c in buf.copies[k]:
            c[...] = buf.S[k]

    def set_error(self, buf: DenseBuffers, y, probs: dict, factor: float = 1.0) -> None:
        """Write each head's error ``factor (y_e - p_e)`` into the input buffers of the layers
        it nudges."""
        for e, p in probs.items():
            target = y[e] if isinstance(y, dict) else y
            first = None
            for tgt, off in self.slots.get(e, ()):
                dst = buf.X[tgt][:, off:off + self.size[e]]
                if first is None:
                    np.subtract(target, p, out=dst)
                    if factor != 1.0:
                        dst *= factor
                    first = dst
                else:
                    dst[...] = first

    def _source(self, buf: DenseBuffers, b: Block, k: int, off: int) -> np.ndarray:
        return buf.S[b.src] if b.src <= self.L else buf.X[k][:, off:off + self.size[b.src]]

    def eval(self, buf: DenseBuffers, nudged: bool, mirror: bool = False) -> None:
        """H_k = rho(h_k) for every layer from the states mirrored in the input buffers X
        (one read of every array per layer: the circuit's right-hand side); ``mirror``: also
        write each H_k into X (the discrete map, where H_k is the next state)."""
        net = self.net
        width = self.width_nudged if nudged else self.width_free
        for k in self.layers:
            H = buf.H[k]
            w = width[k]
            if k in self.read_layers:
                self._sum_reads(buf, k, nudged, H)
            elif w > 0:
                np.matmul(buf.X[k][:, :w], self.M[k][:w], out=H)
                for b, off in self._observed[k]:   # reads folded into the stacked GEMM
                    if off < w:
                        net.ops[b.op].notify_read(self._source(buf, b, k, off), b.transposed)
            else:
                H.fill(0.0)
        for k in self.layers:   # rho(h + drive or bias), one pass
            activate(buf.H[k], net.activation, buf.D[k] if k in buf.D else net.b.get(k),
                     buf.copies[k] if mirror else ())

    def _sum_reads(self, buf: DenseBuffers, k: int, nudged: bool, H: np.ndarray) -> None:
        """h_k (without drive and bias) as the sum of one read per incoming block."""
        first = True
        for b, off in zip(self.inc[k], self.offsets[k]):
            if b.src > self.L and not nudged:
                continue
            self.read_block(b, self._source(buf, b, k, off), H, accumulate=not first)
            first = False
        if first:
            H.fill(0.0)

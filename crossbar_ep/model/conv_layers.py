"""The conv layer map: convolutions, 2 x 2 max-pooling with switches, unpooled feedback.

Layer k's state s_k is its full map rho(x_k) (B, H_k, W_k, C_k), kept flat in channels-last
order; it emits its pooled map p_k, I_k = pool2(s_k) (switches I_k) to the layer above and to
readouts.  One synchronous step, every block read from the old states:

    h_1 = D_1 + beta_1 unpool(convT(s_2; C_2), I_1)                 D_1 = conv_1(x) + b_1
    h_k = conv_k(p_{k-1}) + b_k + beta_k unpool(convT(s_{k+1}; C_{k+1}), I_k)
    h_L = conv_L(p_{L-1}) + b_L [+ unpool(beta_f (y - p) W_f, I_L)]       (nudged phases)
    s_k <- rho(h_k)

and a head on layer l adds ``unpool(beta_e (y - p_e) A_l, I_l)`` to h_l.  D_1 is read once per
batch (its patch matrix is kept for C_1's update).  A free phase starts from the net's
feed-forward response to a blank image.  The local update of a kernel C_k sees the patch
matrix of its input (the pooled map below it, or the image) as ``pre`` and the displacement of
layer k's map, one row per output position, as ``delta``.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.model.activations import activate
from crossbar_ep.model.conv import col2im, im2col, pool2, to_maps, unpool2
from crossbar_ep.model.conv_kernels import (clip_pool_nb, pool, unpool_add_clip_pool_nb,
                                           unpool_add_nb, unpool_add_to_nb)
from crossbar_ep.model.layer_map import Buffers, LayerMap


class ConvBuffers(Buffers):
    """Conv work arrays: the drive D_1 (maps) and each nudging head's error (B, n_e)."""

    def __init__(self, lm: "ConvLayers", B: int, predictor: bool):
        super().__init__(lm.layers, lm.size, B, lm.net.dtype, predictor)
        self.D: dict = {}
        self.err = {e: np.zeros((B, lm.size[e]), lm.net.dtype) for e in lm.nudging}
        self.pools = None     # pools of the next state, made while activating (discrete map)
        self._pool_bufs: dict = {}
        self._flip: dict = {}

    def next_pools(self, k: int, geo) -> tuple:
        """(pooled map, switches) arrays for layer k's next state: two pairs used in turn, so
        the pools the step reads are never the ones it writes."""
        pair = self._pool_bufs.get(k)
        if pair is None:
            shape = (self.B, geo.h_out // 2, geo.w_out // 2, geo.c_out)
            pair = self._pool_bufs[k] = [(np.empty(shape, self.S[k].dtype),
                                          np.empty(shape, np.uint8)) for _ in range(2)]
        self._flip[k] = f = 1 - self._flip.get(k, 0)
        return pair[f]


class ConvLayers(LayerMap):
    """The layer map of a :class:`~crossbar_ep.model.conv.ConvNetwork`."""

    emits_states = False

    def __init__(self, net, predictor: bool = False):
        self.net, self.predictor = net, predictor
        self.L = L = net.L
        self.layers = list(range(1, L + 1))
        self.size = {**dict(enumerate(net.sizes)), **net.head_sizes}
        self.conv_of = net.conv_ops          # operator name -> ConvOperator
        self.geo = {k: net.convs[k - 1].g for k in self.layers}
        blocks = net.blocks
        self.drive = [b for b in blocks if b.src == 0]
        for b in self.drive:
            if b.dst != 1 or b.op not in self.conv_of:
                raise ValueError(f"conv nets: the input drives layer 1 through its kernel; "
                                 f"block {b.op} 0 -> {b.dst} is not supported")
        self.fwd = {k: [b for b in blocks if b.dst == k and b.src >= 1 and not b.transposed]
                    for k in self.layers}
        self.back = {k: sorted((b for b in blocks if b.dst == k and b.transposed),
                               key=lambda b: b.src > L) for k in self.layers}
        self.heads = {e: [b for b in blocks if b.dst == e]
                      for e in sorted({b.dst for b in blocks if b.dst > L})}
        self.nudging = [e for e in self.heads
                        if any(b.src == e and b.transposed for b in blocks)]
        self._buffers: dict = {}

    # ------------------------------------------------------------------ shapes
    def maps(self, k: int, s: np.ndarray) -> np.ndarray:
        """Layer k's flat states (B, n_k) as maps (B, H, W, C) (a view)."""
        g = self.geo[k]
        return s.reshape(s.shape[0], g.h_out, g.w_out, g.c_out)

    def emit(self, k: int, s: np.ndarray) -> np.ndarray:
        return pool(self.maps(k, s))[0].reshape(s.shape[0], -1)

    def buffers(self, B: int) -> ConvBuffers:
        buf = self._buffers.get(B)
        if buf is None:
            if len(self._buffers) > 4:
                self._buffers.clear()
            buf = self._buffers[B] = ConvBuffers(self, B, self.predictor)
        return buf

    # ------------------------------------------------------------------ phases
    def drive_input(self, buf: ConvBuffers, x: np.ndarray) -> dict:
        """D_1 = conv_1(x) + b_1 of flat images x (B, n_in); returns the batch's input patch
        matrices (projection name -> (B * positions, k * k * C_in))."""
        X = to_maps(x, self.net.in_shape)
        patches, buf.D = {}, {}
        for b in self.drive:
            op = self.conv_of[b.op]
            cols = im2col(X, op.g.k, op.g.pad)
            D = op.conv_cols(cols, X.shape[0], b.gain)
            patches[b.op] = cols
            buf.D[b.dst] = D if b.dst not in buf.D else buf.D[b.dst] + D
        if 1 in self.net.b:
            buf.D[1] += self.net.b[1]
        return {"patches": patches, "drive": dict(buf.D)}

    def load_batch(self, buf: ConvBuffers, batch: dict) -> None:
        buf.D = dict(batch["drive"])

    def start(self, B: int) -> list:
        """Feed-forward response to a blank image (h_1 = b_1), states rho(h), flat (B, n_k)
        (read-only views of one image's states)."""
        net = self.net
        g1 = self.geo[1]
        h = np.broadcast_to(net.b[1], (1, g1.h_out, g1.w_out, g1.c_out)).copy()
        out = []
        for k in self.layers:
            if k > 1:
                h = self.conv_of[f"C{k}"].conv(pool2(out[-1])[0])
                h += net.b[k]
            flat = np.ascontiguousarray(h).reshape(1, -1)
            activate(flat, net.activation)
            out.append(flat.reshape(h.shape))
        return [np.broadcast_to(s.reshape(1, -1), (B, s.size)) for s in out]

    def load_state(self, buf: ConvBuffers, s: list | None) -> None:
        buf.pools = None
        start = self.start(buf.B) if s is None else s[1:]
        for k, a in zip(self.layers, start):
            np.copyto(buf.S[k], a)

    def mirror(self, buf: ConvBuffers, k: int) -> None:
        buf.pools = None          # the engine wrote a state: pools made earlier are stale

    def set_error(self, buf: ConvBuffers, y, probs: dict, factor: float = 1.0) -> None:
        for e, p in probs.items():
            dst = buf.err[e]
            np.subtract(y[e] if isinstance(y, dict) else y, p, out=dst)
            if factor != 1.0:
                dst *= factor

    def eval(self, buf: ConvBuffers, nudged: bool, mirror: bool = False) -> None:
        net, L = self.net, self.L
        B = buf.B
        S = {k: self.maps(k, buf.S[k]) for k in self.layers}
        cached = buf.pools
        if cached is not None and all(cached[k][2] is buf.S[k] for k in self.layers):
            pools = {k: cached[k][:2] for k in self.layers}
        else:
            pools = {k: pool(S[k]) for k in self.layers}
        buf.pools = None
        fuse = mirror and net.activation == "hard_sigmoid" and net.dtype == np.float32
        nxt = {}
        for k in self.layers:
            H = self.maps(k, buf.H[k])
            base = buf.D.get(k)       # the drive: copied in with the first feedback below
            if base is not None and self.fwd[k]:
                np.copyto(H, base)
                base = None
            for i, b in enumerate(self.fwd[k]):
                op = self.conv_of[b.op]
                if i == 0 and k not in buf.D:
                    op.conv(pools[b.src][0], b.gain, out=H)
                else:
                    H += op.conv(pools[b.src][0], b.gain)
            if k not in buf.D and k in net.b:
                H += net.b[k]
            m, idx = pools[k]
            if base is not None and not any(b.src <= L for b in self.back[k]):
                np.copyto(H, base)
                base = None
            back = [b for b in self.back[k] if b.src <= L or nudged]
            for j, b in enumerate(back):
                if b.src <= L:        # feedback: convT of the state above, unpooled
                    fb = self.conv_of[b.op].conv_t(S[b.src])
                    if fuse and j == len(back) - 1:   # the last term: add, clip and pool
                        pm, pidx = buf.next_pools(k, self.geo[k])
                        unpool_add_clip_pool_nb(H, H if base is None else base, fb, idx,
                                                b.gain, pm, pidx)
                        nxt[k] = (pm, pidx, buf.H[k])
                    elif base is not None:
                        unpool_add_to_nb(H, base, fb, idx, b.gain)
                    else:
                        unpool_add_nb(H, fb, idx, b.gain)
                    base = None
                else:                 # a head's error through its readout, transposed
                    op = net.ops[b.op]
                    g = np.empty((B, op.n_in), H.dtype)
                    op.read_transposed_into(buf.err[b.src], g, b.gain)
                    unpool_add_nb(H, g.reshape(m.shape), idx, 1.0)
        for k in self.layers:
            if k in nxt:
                continue
            if fuse:      # the discrete map: H is the next state; pool it while in cache
                pm, pidx = buf.next_pools(k, self.geo[k])
                clip_pool_nb(self.maps(k, buf.H[k]), pm, pidx)
                nxt[k] = (pm, pidx, buf.H[k])
            else:
                activate(buf.H[k], net.activation)
        if fuse:
            buf.pools = nxt

    # ------------------------------------------------------------------ learning signals
    def local_pre(self, p, emitted: list, phase) -> np.ndarray:
        op = self.conv_of.get(p.name)
        if op is None:            # Wf, a head: the flattened pooled map
            return emitted[p.src]
        if p.src == 0:
            return phase.batch["patches"][p.name]
        return op.patches(emitted[p.src], reuse=True)

    def local_delta(self, p, delta: np.ndarray) -> np.ndarray:
        op = self.conv_of.get(p.name)
        return delta if op is None else delta.reshape(-1, op.g.c_out)

    def bias_rows(self, k: int, delta: np.ndarray) -> np.ndarray:
        return delta.reshape(-1, self.geo[k].c_out) if k <= self.L else delta

    # ------------------------------------------------------------------ the BP twin
    def bp_emit(self, k: int, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pooled map, flat, switches) of layer k's state for backpropagation."""
        m, idx = pool2(self.maps(k, s))
        return m.reshape(s.shape[0], -1), idx

    def bp_unemit(self, k: int, g: np.ndarray, idx) -> np.ndarray:
        """Adjoint of :meth:`bp_emit` at fixed switches: a pooled-map gradient to the map."""
        geo = self.geo[k]
        gm = g.reshape(g.shape[0], geo.h_out // 2, geo.w_out // 2, geo.c_out)
        return unpool2(gm, idx, geo.h_out, geo.w_out).reshape(g.shape[0], -1)

    def bp_read(self, p, e_src: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p's contribution to its destination's pre-activation (B, n_dst), the ``pre`` its
        gradient uses) from the source's emitted signal, with the plain matrix W."""
        op = self.conv_of.get(p.name)
        if op is None:
            return e_src @ W.T, e_src
        g = op.g
        cols = im2col(e_src.reshape(-1, g.h_in, g.w_in, g.c_in), g.k, g.pad)
        return (cols @ W.T).reshape(e_src.shape[0], -1), cols

    def bp_read_transposed(self, p, delta: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. the source's emitted signal of p's read, from its destination's
        pre-activation gradient delta (B, n_dst)."""
        op = self.conv_of.get(p.name)
        if op is None:
            return delta @ W
        g = op.g
        B = delta.shape[0]
        return col2im(delta.reshape(-1, g.c_out) @ W, B, g.h_in, g.w_in, g.c_in, g.k,
                      g.pad).reshape(B, -1)

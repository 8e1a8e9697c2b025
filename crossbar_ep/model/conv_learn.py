"""Settling, EP and the BP twin of the convolutional FRE-RNN (:mod:`crossbar_ep.model.conv`).

One synchronous step from the old pre-activation maps x_1 .. x_L (rho = hard-sigmoid, read
when a state is used; p_k, I_k = pool2(rho(x_k)) computed first for every layer):

    x_1 <- D_1 + beta_1 unpool(convT(rho(x_2); C_2), I_1)           D_1 = conv_1(x_in) + b_1
    x_k <- conv_k(p_{k-1}) + b_k + beta_k unpool(convT(rho(x_{k+1}); C_{k+1}), I_k)
    x_L <- conv_L(p_{L-1}) + b_L [+ beta_f unpool(reshape((y - softmax(z)) W_f), I_L)]
    z   =  W_f flatten(p_L) + b_f

The nudge (nudged phase only) is recomputed every step; D_1 is read once per batch.  A phase
starts from the net's feed-forward response to an all-zero image (the nudged phase from the
free end).  EP updates: ``sum over positions, mean over batch`` of
``(rho(x^beta) - rho(x^0)) (x) free input patches`` (raw: no division by beta unless
``norm`` says so); the readout learns ``mean((y - p^0) (x) flatten(p_L^0))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar_ep.model.conv import ConvNetwork, col2im, im2col, pool2, unpool2
from crossbar_ep.model.conv_kernels import rho_pool, unpool_add_nb, unpool_add_to_nb
from crossbar_ep.model.learners import BatchStats, cross_entropy_sum, one_hot
from crossbar_ep.model.operators import DigitalMatrix
from crossbar_ep.model.settle import softmax


def rho(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


def to_maps(x: np.ndarray, in_shape: tuple) -> np.ndarray:
    """Flat images (B, C*H*W) in channel-first order -> maps (B, H, W, C)."""
    C, H, W = in_shape
    return np.ascontiguousarray(x.reshape(-1, C, H, W).transpose(0, 2, 3, 1))


@dataclass
class ConvPhase:
    """End of a phase: maps x[k-1] of layer k (B, H, W, C), pooled maps and switches of
    rho(x), logits z, probabilities p, the last step's max |dx|, steps used."""

    x: list
    pooled: list
    switches: list
    z: np.ndarray
    p: np.ndarray
    residual: float
    steps: int
    s_mean: list | None = None        # rho(x) averaged over the last average_last steps
    pooled_mean: list | None = None   # pooled maps averaged over the same steps
    cols0: np.ndarray | None = None   # input patch matrix of conv 1
    drive: np.ndarray | None = None   # D_1
    time_tau: float = 0.0
    heads: dict | None = None

    @property
    def s(self) -> list:
        """States after rho, indexed like the dense net's (s[0] unused)."""
        return [None, *(rho(x) for x in self.x)]


class ConvSettler:
    """Free and nudged phases of a :class:`ConvNetwork` (T and K synchronous steps)."""

    def __init__(self, net: ConvNetwork, T: int, K: int, meter=None):
        self.net, self.T, self.K, self.meter = net, int(T), int(K), meter
        self._sign = 1.0          # the nudge's sign (centered nudging's -beta_f phase: -1)
        self.average_last = 1     # settling.average_last: the update's states, averaged
        self.readout_reads = 1    # settling.readout_reads: reads averaged into a phase's p
        self.observers: list = []   # on_phase(nudged, S) / on_step(S), S: layer -> (B, n_k)
        L = len(net.convs)          # auxiliary heads: index -> (readout name, layer, nudge gain)
        gains = {b.src: b.gain for b in net.blocks if b.transposed and b.src > L + 1}
        self.heads = {p.dst: (p.name, p.src, gains.get(p.dst, 0.0))
                      for p in net.projections if p.dst > L + 1}

    def refresh(self) -> None:
        """Nothing cached beyond a batch (kept for the dense Settler's interface)."""

    # ---------------------------------------------------------------- pieces
    def readout(self, pL: np.ndarray, reads: int = 1) -> np.ndarray:
        """Readout logits (B, n_out) of the pooled top maps ``pL``: the mean of ``reads``
        reads of Wf, plus the bias."""
        net = self.net
        L = len(net.convs)
        v = np.ascontiguousarray(pL).reshape(pL.shape[0], -1)
        z = net.ops["Wf"].read(v)
        for _ in range(reads - 1):
            z += net.ops["Wf"].read(v)
        if reads > 1:
            z *= 1.0 / reads
        z += net.b[L + 1]
        return z

    def head_probs(self, pools: list) -> dict:
        """Softmax of every auxiliary head at the pooled maps ``pools`` (head index ->
        (B, n_out))."""
        return {e: softmax(self.net.ops[name].read(
                    np.ascontiguousarray(pools[l - 1]).reshape(pools[l - 1].shape[0], -1)))
                for e, (name, l, _) in self.heads.items()}

    def _nudge(self, h: np.ndarray, name: str, err: np.ndarray, gain: float, pooled, switches):
        """h += unpool(gain * (err @ A), switches): a readout's error through its transposed
        read, into the (pre-pool) map h."""
        g = np.empty((err.shape[0], self.net.ops[name].n_in), h.dtype)
        self.net.ops[name].read_transposed_into(err, g, gain * self._sign)
        unpool_add_nb(h, g.reshape(pooled.shape), switches, 1.0)

    def drive(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(input patch matrix, D_1 = conv_1(x_in) + b_1) of flat images x (B, n_in)."""
        c1 = self.net.convs[0]
        X = to_maps(x, self.net.in_shape)
        cols = im2col(X, c1.g.k, c1.g.pad)
        D = c1.conv_cols(cols, X.shape[0])
        D += self.net.b[1]
        return cols, D

    def start(self, B: int) -> list:
        """Feed-forward response to an all-zero image (x_1 = b_1), repeated for B samples."""
        net = self.net
        g1 = net.convs[0].g
        xs = [np.broadcast_to(net.b[1], (1, g1.h_out, g1.w_out, g1.c_out)).copy()]
        for k in range(1, len(net.convs)):
            h = net.convs[k].conv(pool2(rho(xs[-1]))[0])
            h += net.b[k + 1]
            xs.append(h)
        return [np.repeat(x, B, axis=0) for x in xs]

    def step(self, xs: list, D1: np.ndarray, y1h: np.ndarray | None):
        """One synchronous step; returns (new maps, logits of the old state)."""
        net = self.net
        L = len(net.convs)
        sp = [rho_pool(x) for x in xs]
        s = [a for a, _, _ in sp]
        pools = [(m, i) for _, m, i in sp]
        z = self.readout(pools[-1][0])
        new = []
        for k in range(L):
            op = net.convs[k]
            if k == 0:
                h = D1 if k < L - 1 else D1.copy()     # layer 1 with feedback: copied below
            else:
                h = op.conv(pools[k - 1][0])
                h += net.b[k + 1]
            if k < L - 1:
                fb = net.convs[k + 1].conv_t(s[k + 1])    # beta_i: gain after col2im
                if h is D1:       # D_1 + unpooled feedback, in one pass
                    h = unpool_add_to_nb(np.empty_like(D1), D1, fb, pools[k][1],
                                         net.beta_i[k])
                else:
                    unpool_add_nb(h, fb, pools[k][1], net.beta_i[k])
            elif y1h is not None:
                self._nudge(h, "Wf", y1h - softmax(z.copy()), net.beta_f, *pools[k])
            new.append(h)
        if y1h is not None:       # auxiliary heads nudge their layers (new maps, not D_1)
            for e, p in self.head_probs([p for p, _ in pools]).items():
                name, l, gain = self.heads[e]
                if gain:
                    self._nudge(new[l - 1], name, y1h - p, gain, *pools[l - 1])
        return new, z

    def run(self, xs: list, D1: np.ndarray, steps: int, y1h=None) -> ConvPhase:
        resid, obs = 0.0, self.observers

        def flat(maps):   # the observers' view: layer -> (B, H*W*C) pre-activation states
            return {k: x.reshape(x.shape[0], -1) for k, x in enumerate(maps, start=1)}
        for o in obs:
            o.on_phase(y1h is not None, flat(xs))
        m = min(self.average_last, steps)
        s_sum = p_sum = None
        for t in range(steps):
            new, _ = self.step(xs, D1, y1h)
            if t == steps - 1:
                resid = max(float(np.abs(a - b).max()) for a, b in zip(new, xs))
            xs = new
            if m > 1 and t >= steps - m:   # the update's states: mean of the last m steps
                sp = [rho_pool(x) for x in xs]
                if s_sum is None:
                    s_sum, p_sum = [a.copy() for a, _, _ in sp], [b.copy() for _, b, _ in sp]
                else:
                    for i, (a, b, _) in enumerate(sp):
                        s_sum[i] += a
                        p_sum[i] += b
            for o in obs:
                o.on_step(flat(xs))
        pools = [rho_pool(x)[1:] for x in xs]
        z = self.readout(pools[-1][0], self.readout_reads)
        ph = ConvPhase(xs, [p for p, _ in pools], [i for _, i in pools], z,
                       softmax(z.copy()), resid, steps, time_tau=float(steps))
        if s_sum is not None:
            ph.s_mean = [a / m for a in s_sum]
            ph.pooled_mean = [b / m for b in p_sum]
        if self.heads:
            ph.heads = self.head_probs(ph.pooled)
        return ph

    # ---------------------------------------------------------------- phases
    def free(self, x: np.ndarray) -> ConvPhase:
        x = np.ascontiguousarray(x, dtype=self.net.dtype)
        cols, D1 = self.drive(x)
        ph = self.run(self.start(x.shape[0]), D1, self.T)
        ph.cols0, ph.drive = cols, D1
        return ph

    def nudged(self, free: ConvPhase, y1h: np.ndarray, sign: float = 1.0) -> ConvPhase:
        """Nudged phase from the free end, nudge ``sign * beta_f`` (sign -1: the -beta_f
        phase of centered nudging)."""
        self._sign = float(sign)
        try:
            ph = self.run(list(free.x), free.drive, self.K, y1h)
        finally:
            self._sign = 1.0
        ph.cols0, ph.drive = free.cols0, free.drive
        return ph


def _used(ph: ConvPhase, k: int) -> np.ndarray:
    """rho of layer k's map as the update uses it: averaged over the phase's last steps
    (``settling.average_last``) or the final one."""
    return ph.s_mean[k - 1] if ph.s_mean is not None else rho(ph.x[k - 1])


def _clip_factor(grads: list, max_norm: float | None) -> float:
    """PyTorch's clip_grad_norm_ factor over all update arrays (1 without a limit)."""
    if not max_norm:
        return 1.0
    total = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
    return min(1.0, max_norm / (total + 1e-6))


class ConvEPLearner:
    """EP on a :class:`ConvNetwork`; kernels on crossbar arrays learn through their pulse
    rules (``update`` of the kernel matrix operator with the patch matrix as ``pre``)."""

    def __init__(self, net: ConvNetwork, settler: ConvSettler, optimizer, pulses=None,
                 norm: dict | None = None, clip_norm: float | None = None,
                 centered: bool = False):
        self.net, self.settler, self.opt, self.pulses = net, settler, optimizer, pulses
        self.centered = centered   # nudged phases at +-beta_f, delta = (rho+ - rho-) / 2
        self.norm = norm or {k: 1.0 for k in net.norm}
        self.clip_norm = clip_norm
        self.layer_stats = None   # optional observer of (delta, updates) per batch
        self.last_delta: dict = {}
        if optimizer is not None:
            net.set_optimizer(optimizer)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.settler.free(x).p

    def settle(self, x: np.ndarray) -> ConvPhase:
        """The free phase (its ``heads`` hold the auxiliary heads' probabilities)."""
        return self.settler.free(x)

    def local_signals(self, x: np.ndarray, y1h: np.ndarray):
        """name -> (pre (rows, n_in), delta (rows, n_out), scale) of every trained matrix,
        bias name -> update, and the free and nudged phases."""
        net, B = self.net, x.shape[0]
        L = len(net.convs)
        free = self.settler.free(x)
        nudged = self.settler.nudged(free, y1h)
        ref, half = free, 1.0
        if self.centered:          # Laborieux et al. 2021: no O(beta_f) bias
            ref, half = self.settler.nudged(free, y1h, sign=-1.0), 0.5
        local, bias = {}, {}
        pooled = free.pooled_mean or free.pooled    # phase averages where the settler keeps them
        for k in range(1, L + 1):
            d = _used(nudged, k) - _used(ref, k)
            if self.centered:
                d *= half
            self.last_delta[k] = d
            d2 = d.reshape(-1, d.shape[-1])
            op = net.convs[k - 1]
            pre = free.cols0 if k == 1 else im2col(pooled[k - 2], op.g.k, op.g.pad)
            sc = 1.0 / (B * self.norm[f"C{k}"])
            local[f"C{k}"] = (pre, d2, sc)
            bias[f"b{k}"] = d2.sum(axis=0) * (1.0 / (B * self.norm[f"b{k}"]))
        e = y1h - free.p
        pL = np.ascontiguousarray(pooled[-1]).reshape(B, -1)
        local["Wf"] = (pL, e, 1.0 / (B * self.norm["Wf"]))
        for h, p in (free.heads or {}).items():   # heads learn at the free state, like Wf
            name, l, _ = self.settler.heads[h]
            pre = np.ascontiguousarray(pooled[l - 1]).reshape(B, -1)
            local[name] = (pre, y1h - p, 1.0 / (B * self.norm.get(name, 1.0)))
        bias[f"b{L + 1}"] = e.sum(axis=0) * (1.0 / (B * self.norm[f"b{L + 1}"]))
        return local, bias, free, nudged

    def updates(self, x: np.ndarray, y1h: np.ndarray) -> tuple[dict, ConvPhase]:
        """Update directions of every parameter (not applied) and the free phase."""
        local, bias, free, _ = self.local_signals(x, y1h)
        out = {n: s * (d.T @ pre) for n, (pre, d, s) in local.items()}
        out.update(bias)
        return out, free

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        net = self.net
        y1h = one_hot(y, net.sizes[-1], net.dtype)
        local, bias, free, nudged = self.local_signals(x, y1h)
        if self.layer_stats is not None:
            self.layer_stats.observe(self.last_delta, local)
        self.opt.begin()
        digital = {n: v for n, v in local.items() if isinstance(net.ops[n], DigitalMatrix)}
        grads = {n: net.ops[n].local_gradient(*v).copy() for n, v in digital.items()}
        f = _clip_factor([*grads.values(), *bias.values()], self.clip_norm)
        for name, v in local.items():
            if name in grads:
                net.ops[name].step(grads[name] * f if f != 1.0 else grads[name])
            else:
                net.ops[name].update(*v)
        for name, g in bias.items():
            self.opt.step(name, (g * f).astype(net.dtype, copy=False))
        return BatchStats(cross_entropy_sum(free.p, y), int((free.p.argmax(1) == y).sum()),
                          free.residual, free.steps, nudged.residual, nudged.steps,
                          free.time_tau, nudged.time_tau)


class ConvBPLearner:
    """Backpropagation through the feed-forward conv net (the beta_i -> 0 limit):
    ``x_k = conv_k(p_{k-1}) + b_k``, ``p_k = pool2(rho(x_k))``, softmax readout."""

    settler = None
    pulses = None

    def __init__(self, net: ConvNetwork, optimizer, clip_norm: float | None = None):
        self.net, self.opt, self.clip_norm = net, optimizer, clip_norm

    def forward(self, x: np.ndarray):
        """(patch matrices, maps x_k, switches, last pooled map, probabilities)."""
        net = self.net
        inp = to_maps(np.ascontiguousarray(x, dtype=net.dtype), net.in_shape)
        cols, xs, sw = [], [], []
        for k, op in enumerate(net.convs, start=1):
            c = im2col(inp, op.g.k, op.g.pad)
            h = (c @ net.ops[f"C{k}"].dense().T).reshape(-1, op.g.h_out, op.g.w_out,
                                                         op.g.c_out)
            h += net.b[k]
            inp, idx = pool2(rho(h))
            cols.append(c)
            xs.append(h)
            sw.append(idx)
        z = inp.reshape(inp.shape[0], -1) @ net.ops["Wf"].dense().T + net.b[len(xs) + 1]
        return cols, xs, sw, inp, softmax(z)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[4]

    def gradients(self, x: np.ndarray, y1h: np.ndarray) -> tuple[dict, np.ndarray]:
        """Minus the gradient of the mean cross-entropy for every parameter."""
        net, B = self.net, x.shape[0]
        L = len(net.convs)
        cols, xs, sw, pL, p = self.forward(x)
        dz = (y1h - p) / B
        g = {"Wf": dz.T @ pL.reshape(B, -1), f"b{L + 1}": dz.sum(axis=0)}
        dp = (dz @ net.ops["Wf"].dense()).reshape(pL.shape)
        for k in range(L, 0, -1):
            op = net.convs[k - 1]
            h = xs[k - 1]
            for hp in (q for q in net.projections if q.dst > L + 1 and q.src == k):
                pk = pool2(rho(h))[0].reshape(B, -1)     # head on layer k: weighted CE term
                A = net.ops[hp.name].dense()
                dze = net.head_weight.get(hp.dst, 1.0) * (y1h - softmax(pk @ A.T)) / B
                g[hp.name] = dze.T @ pk
                dp = dp + (dze @ A).reshape(dp.shape)
            dx = unpool2(dp, sw[k - 1], op.g.h_out, op.g.w_out) * ((h > 0) & (h < 1))
            d2 = dx.reshape(-1, op.g.c_out)
            g[f"C{k}"] = d2.T @ cols[k - 1]
            g[f"b{k}"] = d2.sum(axis=0)
            if k > 1:
                gi = op.g
                dp = col2im(d2 @ net.ops[f"C{k}"].dense(), B, gi.h_in, gi.w_in, gi.c_in,
                            gi.k, gi.pad)
        return g, p

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        net = self.net
        y1h = one_hot(y, net.sizes[-1], net.dtype)
        grads, p = self.gradients(x, y1h)
        f = _clip_factor(list(grads.values()), self.clip_norm)
        self.opt.begin()
        for name, gr in grads.items():
            self.opt.step(name, np.ascontiguousarray(gr * f, dtype=net.dtype))
        return BatchStats(cross_entropy_sum(p, y), int((p.argmax(1) == y).sum()), 0.0, 0)

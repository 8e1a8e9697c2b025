"""Settling the FRE-RNN: the synchronous discrete map or Euler steps of its ODE.

Each hidden layer k gathers its inputs with ONE GEMM per step: the states that feed it
(layer k-1 forward, layer k+1 and residual partners as feedback, and in the nudged phase the
output error) are kept side by side in an input buffer ``X_k`` of shape (B, sum n_src), and
the matching blocks ``alpha W^T``, ``beta_k W``, ``beta_f W_f`` are stacked in ``M_k`` of
shape (sum n_src, n_k).  So the sum over incoming paths happens inside BLAS, only the blocks
the topology has are multiplied (no dense (L n) x (L n) coupling matrix), the input drive
``W_0 x`` is computed once per batch, and the activation is applied in place.

Shapes: states (B, n_k) C-contiguous, weights as in :mod:`crossbar_ep.model.network`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crossbar_ep.model import kernels
from crossbar_ep.model.activations import (  # noqa: F401
    activate, activation_derivative, rho, softmax)
from crossbar_ep.model.convergence import PhaseStop
from crossbar_ep.model.network import Block, Network


@dataclass
class PhaseResult:
    """Final states of a phase: ``s[k]`` for k = 1..L (``s[0]`` is the input), the readout
    probabilities ``p`` (B, n_out), the last step's max |ds| per tau, and steps used."""

    s: list
    p: np.ndarray
    residual: float
    steps: int
    time_tau: float = 0.0    # integrated time of the phase, in units of tau
    heads: dict | None = None   # head index -> probabilities, with auxiliary heads
    s_mean: list | None = None  # states averaged over the phase's last ``average_last`` steps


class _Buffers:
    """Per-batch-size work arrays: input buffers X_k, pre-activations H_k, states S_k, and the
    input drive D_k of the layers that have one."""

    def __init__(self, settler: "Settler", B: int):
        net, dt = settler.net, settler.net.dtype
        self.X = {k: np.zeros((B, settler.width_nudged[k]), dt) for k in settler.layers
                  if settler.width_nudged[k] > 0}
        self.H = {k: np.zeros((B, net.sizes[k]), dt) for k in settler.layers}
        self.S = {k: np.zeros((B, net.sizes[k]), dt) for k in settler.layers}
        self.S0 = ({k: np.zeros((B, net.sizes[k]), dt) for k in settler.layers}
                   if settler.method != "euler" else {})
        self.D = {k: np.zeros((B, net.sizes[k]), dt) for k in settler.drive}
        # the column blocks of X that mirror each layer's state (layers summed read by read
        # take their sources from S directly, so nothing is mirrored into theirs)
        self.copies = {k: tuple(self.X[t][:, off:off + net.sizes[k]]
                                for t, off in settler.slots[k] if t not in settler.read_layers)
                       for k in settler.layers}
        self.A: dict = {}   # running sums of the averaged states (made when averaging)


class Settler:
    """Runs the free and nudged phases of one :class:`Network` over its weight operators.

    The settle loop sees only the network's blocks (operator, source, destination, gain,
    direction).  A layer all of whose incoming operators have exact linear reads is evaluated
    by one stacked GEMM per step; the stacked matrices are rebuilt from the operators' dense
    views whenever an operator's ``version`` changes, so they never go stale (:meth:`refresh`
    forces a rebuild, e.g. after writing into ``net.W`` by hand).  Other layers sum one read
    per block (crossbar periphery, wires or I-V law in the loop).  ``meter`` (an energy
    observer) is reset by the training loop; ``observers`` (e.g. a trace recorder) receive
    ``on_phase(nudged, S)`` at the start of each phase and ``on_step(S)`` after every step,
    with S the dict layer -> state (B, n_k).

    ``average_last`` m > 1 (fixed-step methods) also averages each phase's states over its
    last m steps into ``PhaseResult.s_mean`` (an integrating neuron: read noise low-passed).
    ``readout_reads`` n > 1 reads each readout head n times at the end of a phase and
    averages the n outputs before the softmax (an integrating sense amplifier), so the
    probabilities p, which set the output error y - p of the readout's update and of the
    first nudged step, carry 1/n of a single read's noise variance.
    """

    average_last = 1
    readout_reads = 1

    def __init__(self, net: Network, T: int, K: int, mode: str = "discrete",
                 dt_over_tau: float = 1.0, early_stop: bool = False, tolerance: float = 1e-6,
                 max_steps: int | None = None, nudge_error: str = "recomputed",
                 crossbars: dict | None = None, method: str = "euler", atol: float = 1e-4,
                 dt_max_over_tau: float = 1.0, meter=None):
        if method not in ("euler", "heun", "adaptive"):
            raise ValueError(f"method {method!r}: use euler, heun or adaptive")
        if nudge_error == "cumulative" and mode != "discrete" and method != "euler":
            raise ValueError("nudge_error cumulative is defined step by step: use the discrete "
                             "map or Euler steps")
        self.net = net
        self.method = "euler" if mode == "discrete" else method
        self.atol, self.r_max = atol, max(float(dt_max_over_tau), float(dt_over_tau))
        self.r_min = 1e-6
        self.observers: list = []   # trajectory observers (traces.Recorder while recording)
        self.meter = meter
        self.L = L = net.L
        self.layers = list(range(1, L + 1))
        self.r = 1.0 if mode == "discrete" else float(dt_over_tau)
        self.early_stop, self.tol = early_stop, tolerance
        self.stop = PhaseStop(tolerance)   # settling.tolerance_mode: set by the builder
        self.max_steps, self.nudge_error = max_steps, nudge_error
        self.T, self.K = T, K
        self._sign, self._navg = 1.0, 0   # nudge sign; steps summed into the last average
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
        self.out_blocks = self.heads.get(L + 1, [])
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

    def buffers(self, B: int) -> _Buffers:
        buf = self._buffers.get(B)
        if buf is None:
            if len(self._buffers) > 4:
                self._buffers.clear()
            buf = self._buffers[B] = _Buffers(self, B)
        return buf

    # ------------------------------------------------------------------ helpers
    def _read(self, b: Block, v: np.ndarray, out: np.ndarray, accumulate: bool) -> None:
        op = self.net.ops[b.op]
        if b.transposed:
            op.read_transposed_into(v, out, b.gain, accumulate)
        else:
            op.read_into(v, out, b.gain, accumulate)

    def readout(self, sL: np.ndarray) -> np.ndarray:
        """Softmax probabilities (B, n_out) of the output head from the top hidden state."""
        return self.head(self.L + 1, {self.L: sL})

    def head(self, e: int, S, reads: int = 1) -> np.ndarray:
        """Softmax probabilities of head ``e`` from the states ``S`` (layer -> (B, n_k)); the
        plain read for a linear head (a feature hint).  ``reads`` > 1: the mean output of
        that many reads (each with its own read noise) before the softmax."""
        net = self.net
        blocks = self.heads[e]
        z = np.empty((S[blocks[0].src].shape[0], self.size[e]), net.dtype)
        for r in range(reads):
            for i, b in enumerate(blocks):
                self._read(b, S[b.src], z, accumulate=i > 0 or r > 0)
        if reads > 1:
            z *= 1.0 / reads
        if e in net.b:
            z += net.b[e]
        return z if e in net.linear_heads else softmax(z)

    def _probs(self, S) -> dict:
        """Probabilities of every head that nudges (head index -> (B, n_e))."""
        return {e: self.head(e, S) for e in self.heads if e in self.slots}

    def _n_steps(self, length: float) -> int:
        n = int(math.ceil(length / self.r - 1e-9))
        return min(n, self.max_steps) if self.max_steps else n

    def _load_state(self, buf: _Buffers, s: list | None) -> None:
        for k in self.layers:
            if s is None:
                buf.S[k].fill(0.0)
            else:
                np.copyto(buf.S[k], s[k])
            self._mirror(buf, k)

    def _set_error(self, buf: _Buffers, y, probs: dict) -> None:
        """Write each head's error y_e - p_e into the input buffers of the layers it nudges;
        ``y`` is one target (B, n_out) for every head or a dict head index -> target."""
        for e, p in probs.items():
            target = y[e] if isinstance(y, dict) else y
            first = None
            for tgt, off in self.slots.get(e, ()):
                dst = buf.X[tgt][:, off:off + self.size[e]]
                if first is None:
                    np.subtract(target, p, out=dst)
                    if self._sign != 1.0:
                        dst *= self._sign
                    first = dst
                else:
                    dst[...] = first

    def _source(self, buf: _Buffers, b: Block, k: int, off: int) -> np.ndarray:
        return buf.S[b.src] if b.src <= self.L else buf.X[k][:, off:off + self.size[b.src]]

    def _eval(self, buf: _Buffers, width: dict, mirror: bool = False) -> None:
        """H_k = rho(h_k) for every layer from the states mirrored in the input buffers X
        (one read of every array per layer: the circuit's right-hand side); ``mirror``: also
        write each H_k into X (the discrete map, where H_k is the next state)."""
        net = self.net
        nudged = width is self.width_nudged
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

    def _mirror(self, buf: _Buffers, k: int) -> None:
        for c in buf.copies[k]:
            c[...] = buf.S[k]

    def _run(self, buf: _Buffers, x_rows: int, length: float, nudged: bool,
             y: np.ndarray | None) -> tuple[float, int, float]:
        """Integrate one phase for ``length`` tau (or until the residual falls below the
        tolerance with early stopping).  Returns (residual, steps, elapsed time in tau);
        the residual is max |rho(h(s)) - s| = max |ds/dt| tau at the start of the last step."""
        width = self.width_nudged if nudged else self.width_free
        recompute = nudged and self.nudge_error == "recomputed"
        grow = nudged and self.nudge_error == "cumulative"
        if grow:      # the frozen error e0 as written by nudged(); step t drives (t + 1) e0
            e0 = {(k, off): buf.X[k][:, off:off + self.size[e]].copy()
                  for e in self.heads for k, off in self.slots.get(e, ())}
        trace, m, self._navg, stop = self.observers, self.average_last, 0, self.stop
        stop.start(nudged)
        for obs in trace:
            obs.on_phase(nudged, buf.S)
        if self.method == "adaptive":
            return self._run_adaptive(buf, length, width, recompute, y)
        n_steps = self._n_steps(length)
        r, heun = self.r, self.method == "heun"
        discrete = r == 1.0 and not heun
        buf.A = {k: np.zeros_like(buf.S[k]) for k in self.layers} if m > 1 else {}
        resid, used = float("inf"), 0
        for t in range(n_steps):
            check = self.early_stop or t == n_steps - 1 or heun
            if grow:
                for (k, off), e in e0.items():
                    np.multiply(e, t + 1, out=buf.X[k][:, off:off + e.shape[1]])
            self._eval(buf, width, mirror=discrete)
            resid = 0.0
            for k in self.layers:
                H, S = buf.H[k], buf.S[k]
                if heun:       # predictor: Euler; K1 = f(s) kept for the corrector
                    rk = kernels.heun_predict(S, H, buf.S0[k], r)
                elif discrete:    # H is the next state, already mirrored into X
                    rk = kernels.max_abs_diff(H, S) if check else 0.0
                    buf.S[k], buf.H[k] = H, S
                else:
                    rk = kernels.ode_step(S, H, r)
                resid = max(resid, rk)
                if self.early_stop:
                    stop.layer(k, rk)
                if not discrete:
                    self._mirror(buf, k)
            if heun:
                if recompute:
                    self._set_error(buf, y, self._probs(buf.S))
                self._eval(buf, width)
                for k in self.layers:
                    kernels.heun_correct(buf.S[k], buf.H[k], buf.S0[k], r)
                    self._mirror(buf, k)
            used = t + 1
            if m > 1 and t >= n_steps - m:
                self._navg += 1
                for k in self.layers:
                    buf.A[k] += buf.S[k]
            for obs in trace:
                obs.on_step(buf.S)
            if recompute:
                self._set_error(buf, y, self._probs(buf.S))
            if self.early_stop and stop.settled(resid, used):
                break
        return resid, used, used * r

    def _run_adaptive(self, buf: _Buffers, length: float, width: dict, recompute: bool,
                      y: np.ndarray | None) -> tuple[float, int, float]:
        """Heun-Euler embedded pair with step-size control: the local error estimate
        ``r/2 max |f(s_pred) - f(s)|`` is kept below ``atol``; dt never exceeds
        ``dt_max_over_tau`` tau."""
        r, elapsed, used, resid = self.r, 0.0, 0, float("inf")
        trace = self.observers
        while elapsed < length - 1e-12:
            if self.max_steps and used >= self.max_steps:
                break
            r = min(r, length - elapsed)
            self._eval(buf, width)
            resid = 0.0
            for k in self.layers:        # s0 := s, K1 := f(s) (in H), s := s + r K1
                resid = max(resid, kernels.heun_predict(buf.S[k], buf.H[k], buf.S0[k], r))
            if self.early_stop and resid < self.tol:
                for k in self.layers:    # converged at the start of this step: undo it
                    np.copyto(buf.S[k], buf.S0[k])
                    self._mirror(buf, k)
                break
            while True:
                for k in self.layers:
                    self._mirror(buf, k)
                if recompute:
                    self._set_error(buf, y, self._probs(buf.S))
                self._eval(buf, width)
                err = 0.0
                for k in self.layers:
                    err = max(err, kernels.heun_error(buf.S[k], buf.H[k], buf.S0[k], r))
                if err <= self.atol:
                    break
                if r <= self.r_min:   # rounding noise exceeds atol: smaller steps won't help
                    from crossbar_ep.errors import CrossbarEPError
                    raise CrossbarEPError(
                        f"settling.atol = {self.atol:g}: the adaptive step fell to {r:g} tau "
                        f"and the error estimate ({err:.3g}) still exceeds atol, which is below "
                        f"what {self.net.dtype} resolves here; raise settling.atol")
                r_new = max(self.r_min, r * max(0.2, 0.9 * math.sqrt(self.atol / err)))
                for k in self.layers:    # reject: redo the predictor with the smaller step
                    kernels.heun_repredict(buf.S[k], buf.S0[k], r, r_new)
                r = r_new
            for k in self.layers:
                kernels.heun_correct(buf.S[k], buf.H[k], buf.S0[k], r)
                self._mirror(buf, k)
            elapsed += r
            used += 1
            for obs in trace:
                obs.on_step(buf.S)
            if recompute:
                self._set_error(buf, y, self._probs(buf.S))
            grow = 2.0 if err == 0.0 else min(2.0, 0.9 * math.sqrt(self.atol / err))
            r = min(self.r_max, r * max(grow, 0.2))
        return resid, used, elapsed

    def _sum_reads(self, buf: _Buffers, k: int, nudged: bool, H: np.ndarray) -> None:
        """h_k (without drive and bias) as the sum of one read per incoming block."""
        first = True
        for b, off in zip(self.inc[k], self.offsets[k]):
            if b.src > self.L and not nudged:
                continue
            self._read(b, self._source(buf, b, k, off), H, accumulate=not first)
            first = False
        if first:
            H.fill(0.0)

    # ------------------------------------------------------------------ phases
    def drive_input(self, buf: _Buffers, x: np.ndarray) -> None:
        """Input drive (e.g. W_0 x, plus the layer's bias), computed once per batch."""
        for k, blocks in self.drive.items():
            D = buf.D[k]
            for i, b in enumerate(blocks):
                self._read(b, x, D, accumulate=i > 0)
            if k in self.net.b:
                D += self.net.b[k]

    def free(self, x: np.ndarray) -> PhaseResult:
        """Free phase from s = 0 for T (units of tau); x: (B, n_in)."""
        self.sync()
        buf = self.buffers(x.shape[0])
        self.drive_input(buf, x)
        self._load_state(buf, None)
        resid, used, tau = self._run(buf, x.shape[0], self.T, False, None)
        return self._result([x] + [buf.S[k].copy() for k in self.layers], resid, used, tau,
                            buf)

    def _result(self, s: list, resid: float, used: int, tau: float,
                buf: _Buffers) -> PhaseResult:
        S = dict(enumerate(s))
        heads = {e: self.head(e, S, self.readout_reads) for e in self.heads}
        mean = ([s[0]] + [buf.A[k] / self._navg for k in self.layers]
                if self._navg else None)
        return PhaseResult(s, heads.get(self.L + 1), resid, used, tau,
                           heads if len(heads) > 1 else None, mean)

    def nudged(self, free: PhaseResult, y: np.ndarray, sign: float = 1.0) -> PhaseResult:
        """Nudged phase from the free state for K, nudge ``sign * beta_f * (y - p) @ B_f``
        into layer L (sign -1: the -beta_f phase of centered nudging).

        Reuses the input drive of the preceding :meth:`free` call on the same batch.
        """
        self.sync()
        self._sign = float(sign)
        buf = self.buffers(free.s[0].shape[0])
        self._load_state(buf, free.s)
        probs = free.heads or {self.L + 1: free.p}
        self._set_error(buf, y, {e: p for e, p in probs.items() if e in self.slots})
        B = free.s[0].shape[0]
        try:
            resid, used, tau = self._run(buf, B, self.K, True, y)
        finally:
            self._sign = 1.0
        return self._result([free.s[0]] + [buf.S[k].copy() for k in self.layers], resid, used,
                            tau, buf)


def preactivations(net: Network, s: list) -> list:
    """Free-phase pre-activations [None, h_1, ..., h_L] (B, n_k) at the states s = [x, s_1,
    ..., s_L], one term at a time from the definitions: forward and residual projections,
    feedback paths, biases (plain NumPy, the reference for tests and diagnostics)."""
    L = net.L
    h = [None] + [np.zeros_like(s[k]) for k in range(1, L + 1)]
    for p in net.projections:
        if p.dst <= L:
            h[p.dst] += p.scale * s[p.src] @ net.W[p.name].T
    for f in net.feedbacks:
        h[f.dst] += f.scale * s[f.src] @ net.feedback_matrix(f)
    for k in range(1, L + 1):
        if k in net.b:
            h[k] += net.b[k]
    return h


def settle_reference(net: Network, x: np.ndarray, steps: int, s_init: list | None = None,
                     y: np.ndarray | None = None, frozen_p: np.ndarray | None = None,
                     r: float = 1.0) -> list:
    """Plain NumPy settle, one term at a time from the definitions (for tests).

    With ``y`` given, the nudge ``beta_f * (y - p) @ B_f`` enters layer L; ``p`` is
    recomputed every step unless ``frozen_p`` is given.  Returns [x, s_1, ..., s_L].
    """
    L = net.L
    s = [x] + ([np.zeros((x.shape[0], n), x.dtype) for n in net.sizes[1:L + 1]]
               if s_init is None else [a.copy() for a in s_init[1:]])

    def probs(sL):
        z = sL @ net.W["Wf"].T + (net.b[L + 1] if L + 1 in net.b else 0.0)
        return softmax(z)

    for _ in range(steps):
        h = preactivations(net, s)
        if y is not None:
            pr = frozen_p if frozen_p is not None else probs(s[L])
            h[L] += net.beta_f * (y - pr) @ net.nudge_matrix()
        for k in range(1, L + 1):
            f_k = rho(h[k], net.activation)
            h[k] = s[k] + r * (f_k - s[k])
        s = [x] + h[1:]
    return s

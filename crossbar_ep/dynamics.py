"""Settling the FRE-RNN: the synchronous discrete map or Euler steps of its ODE.

Each hidden layer k gathers its inputs with ONE GEMM per step: the states that feed it
(layer k-1 forward, layer k+1 and residual partners as feedback, and in the nudged phase the
output error) are kept side by side in an input buffer ``X_k`` of shape (B, sum n_src), and
the matching blocks ``alpha W^T``, ``beta_k W``, ``beta_f W_f`` are stacked in ``M_k`` of
shape (sum n_src, n_k).  So the sum over incoming paths happens inside BLAS, only the blocks
the topology has are multiplied (no dense (L n) x (L n) coupling matrix), the input drive
``W_0 x`` is computed once per batch, and the activation is applied in place.

Shapes: states (B, n_k) C-contiguous, weights as in :mod:`crossbar_ep.network`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import kernels
from .energy import EnergyMeter
from .network import Network


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (B, C)."""
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def activate(h: np.ndarray, kind: str) -> np.ndarray:
    """rho(h) in place: tanh or hard_sigmoid = clip(h, 0, 1)."""
    if kind == "tanh":
        return np.tanh(h, out=h)
    return np.clip(h, 0.0, 1.0, out=h)


def activation_derivative(s: np.ndarray, h: np.ndarray | None, kind: str) -> np.ndarray:
    """rho'(h) given the state s = rho(h): 1 - s^2 for tanh, 1 inside (0, 1) for hard_sigmoid."""
    if kind == "tanh":
        return 1.0 - s * s
    return ((h > 0.0) & (h < 1.0)).astype(s.dtype)


@dataclass
class PhaseResult:
    """Final states of a phase: ``s[k]`` for k = 1..L (``s[0]`` is the input), the readout
    probabilities ``p`` (B, n_out), the last step's max |ds| per tau, and steps used."""

    s: list
    p: np.ndarray
    residual: float
    steps: int
    time_tau: float = 0.0    # integrated time of the phase, in units of tau


class _Buffers:
    """Per-batch-size work arrays: input buffers X_k, pre-activations H_k, states S_k."""

    def __init__(self, settler: "Settler", B: int):
        net, dt = settler.net, settler.net.dtype
        self.X = {k: np.zeros((B, settler.width_nudged[k]), dt) for k in settler.layers
                  if settler.width_nudged[k] > 0}
        self.H = {k: np.zeros((B, net.sizes[k]), dt) for k in settler.layers}
        self.S = {k: np.zeros((B, net.sizes[k]), dt) for k in settler.layers}
        self.S0 = ({k: np.zeros((B, net.sizes[k]), dt) for k in settler.layers}
                   if settler.method != "euler" else {})
        self.D = np.zeros((B, net.sizes[1]), dt)


class Settler:
    """Runs the free and nudged phases of one :class:`Network` (ideal digital backend).

    Call :meth:`refresh` after the weights change (the stacked matrices are copies).
    """

    def __init__(self, net: Network, T: int, K: int, mode: str = "discrete",
                 dt_over_tau: float = 1.0, early_stop: bool = False, tolerance: float = 1e-6,
                 max_steps: int | None = None, nudge_error: str = "recomputed",
                 crossbars: dict | None = None, method: str = "euler", atol: float = 1e-4,
                 dt_max_over_tau: float = 1.0):
        if method not in ("euler", "heun", "adaptive"):
            raise ValueError(f"method {method!r}: use euler, heun or adaptive")
        self.net = net
        self.method = "euler" if mode == "discrete" else method
        self.atol, self.r_max = atol, max(float(dt_max_over_tau), float(dt_over_tau))
        self.r_min = 1e-6
        self.reads = 0   # right-hand-side evaluations (one read of every array per layer)
        self.trace = None  # traces.Recorder while a batch is recorded
        # crossbar reads with non-ideal periphery or wires; ideal ones are exact products with
        # W_eff, which net.W mirrors, so they stay on the fast stacked path
        self.xb = {n: cb for n, cb in (crossbars or {}).items() if not cb.ideal_reads}
        self.all_xb = dict(crossbars or {})
        self.meter = EnergyMeter() if self.all_xb else None
        self.L = net.L
        self.layers = list(range(1, self.L + 1))
        self.r = 1.0 if mode == "discrete" else float(dt_over_tau)
        self.early_stop, self.tol = early_stop, tolerance
        self.max_steps, self.nudge_error = max_steps, nudge_error
        self.T, self.K = T, K
        # blocks[k] = list of (kind, source, matrix getter, gain); nudge block last
        self.blocks: dict = {k: [] for k in self.layers}
        for p in net.projections:
            if 1 <= p.src and p.dst <= self.L:
                self.blocks[p.dst].append(("fwd", p.src, p.name, p.scale))
        for f in net.feedbacks:
            self.blocks[f.dst].append(("fb", f.src, f.name, f.scale))
        self.blocks[self.L].append(("nudge", self.L + 1, "Wf", net.beta_f))
        self.offsets: dict = {}
        self.width_free, self.width_nudged = {}, {}
        for k in self.layers:
            off, offs = 0, []
            for kind, src, _, _ in self.blocks[k]:
                offs.append(off)
                off += net.sizes[src]
            self.offsets[k] = offs
            self.width_nudged[k] = off
            self.width_free[k] = off - (net.sizes[self.L + 1] if k == self.L else 0)
        # where each hidden layer's state is copied: (target layer, column offset)
        self.slots = {j: [] for j in self.layers}
        for k in self.layers:
            for (kind, src, _, _), off in zip(self.blocks[k], self.offsets[k]):
                if kind != "nudge":
                    self.slots[src].append((k, off))
        fb_by_name = self._fb = {f.name: f for f in net.feedbacks}
        self.read_layers = set()
        for k in self.layers:
            for kind, _src, name, _g in self.blocks[k]:
                tied = fb_by_name[name].tied if kind == "fb" else name
                if kind == "nudge":
                    tied = "Wf" if net.nudge_tied else None
                if tied in self.xb:
                    self.read_layers.add(k)
        self.M: dict = {}
        self._buffers: dict = {}
        self.refresh()

    # ------------------------------------------------------------------ weights
    def _block(self, kind: str, name: str) -> np.ndarray:
        net = self.net
        if kind == "fwd":
            return net.W[name].T
        if kind == "fb":
            f = next(f for f in net.feedbacks if f.name == name)
            return net.feedback_matrix(f)
        return net.nudge_matrix()

    def refresh(self) -> None:
        """Re-stack the coupling blocks from the current weights (after every update)."""
        for k in self.layers:
            if not self.blocks[k]:
                continue
            M = self.M.get(k)
            if M is None:
                M = self.M[k] = np.empty((self.width_nudged[k], self.net.sizes[k]),
                                         self.net.dtype)
            for (kind, src, name, gain), off in zip(self.blocks[k], self.offsets[k]):
                np.multiply(self._block(kind, name), gain, out=M[off:off + self.net.sizes[src]])

    def buffers(self, B: int) -> _Buffers:
        buf = self._buffers.get(B)
        if buf is None:
            if len(self._buffers) > 4:
                self._buffers.clear()
            buf = self._buffers[B] = _Buffers(self, B)
        return buf

    # ------------------------------------------------------------------ helpers
    def readout(self, sL: np.ndarray) -> np.ndarray:
        """Softmax probabilities (B, n_out) of the top hidden state."""
        if self.meter is not None and "Wf" in self.all_xb:
            self.meter.add_read(self.all_xb["Wf"], sL)
        z = self.xb["Wf"].forward(sL) if "Wf" in self.xb else sL @ self.net.W["Wf"].T
        if self.net.L + 1 in self.net.b:
            z += self.net.b[self.net.L + 1]
        return softmax(z)

    def _n_steps(self, length: float) -> int:
        n = int(math.ceil(length / self.r - 1e-9))
        return min(n, self.max_steps) if self.max_steps else n

    def _load_state(self, buf: _Buffers, s: list | None) -> None:
        for k in self.layers:
            if s is None:
                buf.S[k].fill(0.0)
            else:
                np.copyto(buf.S[k], s[k])
            for tgt, off in self.slots[k]:
                buf.X[tgt][:, off:off + self.net.sizes[k]] = buf.S[k]

    def _set_error(self, buf: _Buffers, y: np.ndarray, p: np.ndarray) -> None:
        L, n_out = self.L, self.net.sizes[self.L + 1]
        off = self.width_free[L]
        np.subtract(y, p, out=buf.X[L][:, off:off + n_out])

    def _eval(self, buf: _Buffers, width: dict) -> None:
        """H_k = rho(h_k) for every layer from the states mirrored in the input buffers X
        (one read of every array per layer: the circuit's right-hand side)."""
        net = self.net
        nudged = width is self.width_nudged
        self.reads += 1
        for k in self.layers:
            H = buf.H[k]
            w = width[k]
            if k in self.read_layers:
                self._sum_reads(buf, k, nudged, H)
            elif w > 0:
                np.matmul(buf.X[k][:, :w], self.M[k][:w], out=H)
                if k == 1:
                    H += buf.D
                elif k in net.b:
                    H += net.b[k]
            elif k == 1:
                np.copyto(H, buf.D)
            else:
                H.fill(0.0)
                if k in net.b:
                    H += net.b[k]
        for k in self.layers:
            activate(buf.H[k], net.activation)
        if self.meter is not None:
            self._meter_reads(buf, nudged)

    def _meter_reads(self, buf: _Buffers, nudged: bool) -> None:
        """Energy of the array reads of one evaluation (every crossbar block read)."""
        net, meter = self.net, self.meter
        for k in self.layers:
            for (kind, src, name, _g), off in zip(self.blocks[k], self.offsets[k]):
                if kind == "fwd":
                    cb = self.all_xb.get(name)
                    if cb is not None:
                        meter.add_read(cb, buf.S[src])
                elif kind == "fb":
                    f = self._fb[name]
                    cb = self.all_xb.get(f.tied) if f.tied else None
                    if cb is not None:
                        meter.add_read(cb, buf.S[src], transposed=True)
                elif nudged and net.nudge_tied and "Wf" in self.all_xb:
                    meter.add_read(self.all_xb["Wf"], buf.X[k][:, off:off + net.sizes[src]],
                                   transposed=True)

    def _mirror(self, buf: _Buffers, k: int) -> None:
        S = buf.S[k]
        for tgt, off in self.slots[k]:
            buf.X[tgt][:, off:off + self.net.sizes[k]] = S

    def _run(self, buf: _Buffers, x_rows: int, length: float, nudged: bool,
             y: np.ndarray | None) -> tuple[float, int, float]:
        """Integrate one phase for ``length`` tau (or until the residual falls below the
        tolerance with early stopping).  Returns (residual, steps, elapsed time in tau);
        the residual is max |rho(h(s)) - s| = max |ds/dt| tau at the start of the last step."""
        width = self.width_nudged if nudged else self.width_free
        recompute = nudged and self.nudge_error == "recomputed"
        trace = self.trace
        if trace is not None:
            trace.phase(nudged, buf.S)
        if self.method == "adaptive":
            return self._run_adaptive(buf, length, width, recompute, y)
        n_steps = self._n_steps(length)
        r, heun = self.r, self.method == "heun"
        resid, used = float("inf"), 0
        for t in range(n_steps):
            check = self.early_stop or t == n_steps - 1 or heun
            self._eval(buf, width)
            resid = 0.0
            for k in self.layers:
                H, S = buf.H[k], buf.S[k]
                if heun:       # predictor: Euler; K1 = f(s) kept for the corrector
                    resid = max(resid, kernels.heun_predict(S, H, buf.S0[k], r))
                elif r == 1.0:
                    if check:
                        resid = max(resid, kernels.max_abs_diff(H, S))
                    buf.S[k], buf.H[k] = H, S
                else:
                    resid = max(resid, kernels.ode_step(S, H, r))
                self._mirror(buf, k)
            if heun:
                if recompute:
                    self._set_error(buf, y, self.readout(buf.S[self.L]))
                self._eval(buf, width)
                for k in self.layers:
                    kernels.heun_correct(buf.S[k], buf.H[k], buf.S0[k], r)
                    self._mirror(buf, k)
            used = t + 1
            if trace is not None:
                trace.step(buf.S)
            if recompute:
                self._set_error(buf, y, self.readout(buf.S[self.L]))
            if self.early_stop and resid < self.tol:
                break
        return resid, used, used * r

    def _run_adaptive(self, buf: _Buffers, length: float, width: dict, recompute: bool,
                      y: np.ndarray | None) -> tuple[float, int, float]:
        """Heun-Euler embedded pair with step-size control: the local error estimate
        ``r/2 max |f(s_pred) - f(s)|`` is kept below ``atol``; dt never exceeds
        ``dt_max_over_tau`` tau."""
        r, elapsed, used, resid = self.r, 0.0, 0, float("inf")
        trace = self.trace
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
                    self._set_error(buf, y, self.readout(buf.S[self.L]))
                self._eval(buf, width)
                err = 0.0
                for k in self.layers:
                    err = max(err, kernels.heun_error(buf.S[k], buf.H[k], buf.S0[k], r))
                if err <= self.atol:
                    break
                if r <= self.r_min:   # rounding noise exceeds atol: smaller steps won't help
                    from .errors import CrossbarEPError
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
            if trace is not None:
                trace.step(buf.S)
            if recompute:
                self._set_error(buf, y, self.readout(buf.S[self.L]))
            grow = 2.0 if err == 0.0 else min(2.0, 0.9 * math.sqrt(self.atol / err))
            r = min(self.r_max, r * max(grow, 0.2))
        return resid, used, elapsed

    def _sum_reads(self, buf: _Buffers, k: int, nudged: bool, H: np.ndarray) -> None:
        """h_k as the sum of individual reads (crossbar periphery in the loop):
        forward reads of the matrices entering k, transposed reads for tied feedback."""
        net = self.net
        first = True
        for (kind, src, name, gain), off in zip(self.blocks[k], self.offsets[k]):
            cb, transposed = None, False
            if kind == "fwd":
                cb = self.xb.get(name)
                v = buf.S[src]
                M = None if cb else net.W[name].T
            elif kind == "fb":
                f = next(f for f in net.feedbacks if f.name == name)
                cb, transposed = (self.xb.get(f.tied) if f.tied else None), True
                v = buf.S[src]
                M = None if cb else net.feedback_matrix(f)
            else:
                if not nudged:
                    continue
                v = buf.X[k][:, off:off + net.sizes[src]]
                cb = self.xb.get("Wf") if net.nudge_tied else None
                transposed = True
                M = None if cb else net.nudge_matrix()
            if cb is not None:
                cb.read_into(v, H, gain, transposed=transposed, accumulate=not first)
            else:
                part = v @ M
                if first:
                    np.multiply(part, gain, out=H)
                else:
                    if gain != 1.0:
                        part *= gain
                    H += part
            first = False
        if first:
            H.fill(0.0)
        if k == 1:
            H += buf.D
        elif k in net.b:
            H += net.b[k]

    # ------------------------------------------------------------------ phases
    def drive(self, buf: _Buffers, x: np.ndarray) -> None:
        """Input drive W_0 x (+ b_1) into layer 1, computed once per batch."""
        if self.meter is not None and "W0" in self.all_xb:
            self.meter.add_read(self.all_xb["W0"], x)
        if "W0" in self.xb:
            np.copyto(buf.D, self.xb["W0"].forward(x))
        else:
            np.matmul(x, self.net.W["W0"].T, out=buf.D)
        if 1 in self.net.b:
            buf.D += self.net.b[1]

    def free(self, x: np.ndarray) -> PhaseResult:
        """Free phase from s = 0 for T (units of tau); x: (B, n_in)."""
        buf = self.buffers(x.shape[0])
        self.drive(buf, x)
        self._load_state(buf, None)
        resid, used, tau = self._run(buf, x.shape[0], self.T, False, None)
        s = [x] + [buf.S[k].copy() for k in self.layers]
        return PhaseResult(s, self.readout(s[self.L]), resid, used, tau)

    def nudged(self, free: PhaseResult, y: np.ndarray) -> PhaseResult:
        """Nudged phase from the free state for K, nudge beta_f * (y - p) @ B_f into layer L.

        Reuses the input drive of the preceding :meth:`free` call on the same batch.
        """
        buf = self.buffers(y.shape[0])
        self._load_state(buf, free.s)
        self._set_error(buf, y, free.p)
        resid, used, tau = self._run(buf, y.shape[0], self.K, True, y)
        s = [free.s[0]] + [buf.S[k].copy() for k in self.layers]
        return PhaseResult(s, self.readout(s[self.L]), resid, used, tau)


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
        h = [None] + [np.zeros_like(s[k]) for k in range(1, L + 1)]
        for p in net.projections:
            if p.dst <= L:
                h[p.dst] += p.scale * s[p.src] @ net.W[p.name].T
        for f in net.feedbacks:
            h[f.dst] += f.scale * s[f.src] @ net.feedback_matrix(f)
        if y is not None:
            pr = frozen_p if frozen_p is not None else probs(s[L])
            h[L] += net.beta_f * (y - pr) @ net.nudge_matrix()
        for k in range(1, L + 1):
            if k in net.b:
                h[k] += net.b[k]
            f_k = np.tanh(h[k]) if net.activation == "tanh" else np.clip(h[k], 0, 1)
            h[k] = s[k] + r * (f_k - s[k])
        s = [x] + h[1:]
    return s

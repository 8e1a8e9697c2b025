"""The settle engine: free and nudged phases of any FRE-RNN, by the synchronous discrete map
or by integrating its ODE ``tau ds/dt = -s + f(s)``.

The engine owns time: the integrators (discrete map, Euler, Heun, adaptive Heun-Euler), the
stop rule (:mod:`crossbar_ep.model.convergence`), phase averaging, observers, one-sided and
centered nudging, the nudge error (recomputed, frozen or cumulative), the readout and head
errors, and the readout reads.  The network's layer map (:mod:`crossbar_ep.model.layer_map`:
dense layers or conv layers) owns space: the right-hand side ``f(s)`` as the sum of the
blocks' reads.  So every settling and EP option works on every topology.

Shapes: states (B, n_k) C-contiguous, flat for conv maps too (channels-last order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crossbar_ep.model import kernels
from crossbar_ep.model.activations import (  # noqa: F401
    activate, activation_derivative, rho, softmax)
from crossbar_ep.model.convergence import PhaseStop
from crossbar_ep.model.network import Network
from crossbar_ep.model.normalisation import path_gains
from crossbar_ep.model.options import SettlingConfig, TrainingConfig


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
    e: list | None = None       # emitted signals [x, e_1, ..., e_L] (conv: pooled maps)
    e_mean: list | None = None  # emitted signals averaged like ``s_mean``
    batch: dict | None = None   # what the map read once for the batch (conv: input patches)

    def used(self) -> tuple[list, list]:
        """(states, emitted signals) an update uses: averaged over the phase's last steps when
        the engine averages, else the final ones."""
        s = self.s if self.s_mean is None else self.s_mean
        e = self.e if self.e_mean is None else self.e_mean
        return s, (s if e is None else e)


def layer_map(net: Network, predictor: bool):
    """The layer map of ``net``: conv layers for a conv net, dense layers otherwise."""
    if getattr(net, "convs", None):
        from crossbar_ep.model.conv_layers import ConvLayers
        return ConvLayers(net, predictor)
    from crossbar_ep.model.dense_layers import DenseLayers
    return DenseLayers(net, predictor)


class Settler:
    """Runs the free and nudged phases of one :class:`Network` over its weight operators.

    ``training`` gives the phase lengths T and K (steps of the discrete map, or units of tau
    in ODE mode) and the nudge error; ``settling`` the integrator, the stop rule, phase
    averaging and readout reads (:mod:`crossbar_ep.model.options`); ``meter`` an energy
    observer (reset by the training loop) or None.  ``observers`` (e.g. a trace recorder)
    receive ``on_phase(nudged, S)`` at the start of each phase and ``on_step(S)`` after every
    step, with S the dict layer -> state (B, n_k).

    ``settling.average_last`` m > 1 (fixed-step methods) also averages each phase's states
    over its last m steps into ``PhaseResult.s_mean`` (an integrating neuron: read noise
    low-passed).  ``settling.readout_reads`` n > 1 reads each readout head n times at the end
    of a phase and averages the n outputs before the softmax (an integrating sense amplifier).
    """

    def __init__(self, net: Network, *, training: TrainingConfig = TrainingConfig(),
                 settling: SettlingConfig = SettlingConfig(), meter=None):
        s = settling
        mode, method = s.mode, s.method
        if method not in ("euler", "heun", "adaptive"):
            raise ValueError(f"method {method!r}: use euler, heun or adaptive")
        if training.nudge_error == "cumulative" and mode != "discrete" and method != "euler":
            raise ValueError("nudge_error cumulative is defined step by step: use the discrete "
                             "map or Euler steps")
        self.net, self.training, self.settling = net, training, settling
        self.method = "euler" if mode == "discrete" else method
        self.atol, self.r_max = s.atol, max(float(s.dt_max_over_tau), float(s.dt_over_tau))
        self.r_min = 1e-6
        self.observers: list = []   # trajectory observers (traces.Recorder while recording)
        self.meter = meter
        self.map = layer_map(net, self.method != "euler")
        self._ops = dict(net.ops)      # the operators the engine was built for
        self.L = net.L
        self.layers = self.map.layers
        self.r = 1.0 if mode == "discrete" else float(s.dt_over_tau)
        self.early_stop, self.tol = s.early_stop, s.tolerance
        self.stop = PhaseStop(s.tolerance, s.tolerance_mode, net.L, path_gains(net))
        self.max_steps, self.nudge_error = s.max_steps, training.nudge_error
        self.T, self.K = training.T, training.K
        self.average_last, self.readout_reads = s.average_last, s.readout_reads
        self._sign, self._navg = 1.0, 0   # nudge sign; steps summed into the last average

    @property
    def heads(self) -> dict:
        return self.map.heads

    # ------------------------------------------------------------------ weights
    def refresh(self) -> None:
        """Rebuild the layer map from the network's operators as they are now (after writing
        into ``net.W`` by hand, or after replacing an operator on purpose)."""
        self.map = layer_map(self.net, self.method != "euler")
        self._ops = dict(self.net.ops)

    def sync(self) -> None:
        """Before a phase: re-stack what changed; refuse operators replaced since the engine
        was built (their observers and read paths would be missing)."""
        ops = self.net.ops
        if len(ops) != len(self._ops) or any(ops.get(n) is not op
                                             for n, op in self._ops.items()):
            from crossbar_ep.errors import CrossbarEPError
            changed = [n for n, op in self._ops.items() if ops.get(n) is not op]
            raise CrossbarEPError(
                f"operator(s) {', '.join(changed) or '(added)'} of the network changed after "
                f"its settle engine and learner were built (e.g. attach_crossbar after "
                f"ep_learner); build the learner after attaching every array")
        self.map.sync()

    # ------------------------------------------------------------------ readouts
    def head(self, e: int, S, reads: int = 1) -> np.ndarray:
        """Probabilities of head ``e`` (L + 1: the output) from the states S (layer ->
        (B, n_k)), the mean of ``reads`` reads before the softmax."""
        return self.map.head(e, S, reads)

    def readout(self, sL: np.ndarray) -> np.ndarray:
        """Softmax probabilities (B, n_out) of the output head from the top hidden state."""
        return self.map.head(self.L + 1, {self.L: sL})

    def _n_steps(self, length: float) -> int:
        n = int(math.ceil(length / self.r - 1e-9))
        return min(n, self.max_steps) if self.max_steps else n

    # ------------------------------------------------------------------ integration
    def _run(self, buf, length: float, nudged: bool, y, probs0: dict) -> tuple[float, int, float]:
        """Integrate one phase for ``length`` tau (or until the residual falls below the
        tolerance with early stopping).  Returns (residual, steps, elapsed time in tau);
        the residual is max |f(s) - s| = max |ds/dt| tau at the start of the last step."""
        lm = self.map
        recompute = nudged and self.nudge_error == "recomputed"
        grow = nudged and self.nudge_error == "cumulative"
        trace, m, self._navg, stop = self.observers, self.average_last, 0, self.stop
        stop.start(nudged)
        for obs in trace:
            obs.on_phase(nudged, buf.S)
        if self.method == "adaptive":
            return self._run_adaptive(buf, length, nudged, recompute, y)
        if self.settling.solver == "anderson":
            return self._run_anderson(buf, length, nudged, recompute, y)
        n_steps = self._n_steps(length)
        r, heun = self.r, self.method == "heun"
        discrete = r == 1.0 and not heun
        emit = m > 1 and not lm.emits_states
        buf.A = {k: np.zeros_like(buf.S[k]) for k in self.layers} if m > 1 else {}
        buf.E = {}
        resid, used = float("inf"), 0
        for t in range(n_steps):
            check = self.early_stop or t == n_steps - 1 or heun
            if grow:          # the frozen error e0 of the free end; step t drives (t + 1) e0
                lm.set_error(buf, y, probs0, self._sign * (t + 1))
            lm.eval(buf, nudged, mirror=discrete)
            resid = 0.0
            for k in self.layers:
                H, S = buf.H[k], buf.S[k]
                if heun:       # predictor: Euler; K1 = f(s) kept for the corrector
                    rk = kernels.heun_predict(S, H, buf.S0[k], r)
                elif discrete:    # H is the next state, already mirrored
                    rk = kernels.max_abs_diff(H, S) if check else 0.0
                    buf.S[k], buf.H[k] = H, S
                else:
                    rk = kernels.ode_step(S, H, r)
                resid = max(resid, rk)
                if self.early_stop:
                    stop.layer(k, rk)
                if not discrete:
                    lm.mirror(buf, k)
            if heun:
                if recompute:
                    lm.set_error(buf, y, lm.probs(buf.S), self._sign)
                lm.eval(buf, nudged)
                for k in self.layers:
                    kernels.heun_correct(buf.S[k], buf.H[k], buf.S0[k], r)
                    lm.mirror(buf, k)
            used = t + 1
            if m > 1 and t >= n_steps - m:
                self._navg += 1
                for k in self.layers:
                    buf.A[k] += buf.S[k]
                    if emit:
                        e = lm.emit(k, buf.S[k])
                        if k in buf.E:
                            buf.E[k] += e
                        else:
                            buf.E[k] = e.copy()
            for obs in trace:
                obs.on_step(buf.S)
            if recompute:
                lm.set_error(buf, y, lm.probs(buf.S), self._sign)
            if self.early_stop and stop.settled(resid, used):
                break
        return resid, used, used * r

    def _run_anderson(self, buf, length: float, nudged: bool, recompute: bool,
                      y) -> tuple[float, int, float]:
        """The discrete map's fixed point by Anderson acceleration
        (:mod:`crossbar_ep.model.anderson`): each step evaluates f once, as a plain step."""
        from crossbar_ep.model.anderson import Anderson
        lm, stop, trace = self.map, self.stop, self.observers
        mixer = Anderson(self.settling.anderson_depth, self.settling.anderson_beta)
        sizes = [buf.S[k].shape[1] for k in self.layers]
        cuts = np.cumsum(sizes)[:-1]
        resid, used = float("inf"), 0
        for t in range(self._n_steps(length)):
            lm.eval(buf, nudged)
            resid = 0.0
            for k in self.layers:
                rk = kernels.max_abs_diff(buf.H[k], buf.S[k])
                resid = max(resid, rk)
                if self.early_stop:
                    stop.layer(k, rk)
            s = np.concatenate([buf.S[k] for k in self.layers], axis=1)
            fs = np.concatenate([buf.H[k] for k in self.layers], axis=1)
            nxt = mixer.step(s, fs)
            for k, part in zip(self.layers, np.split(nxt, cuts, axis=1)):
                np.copyto(buf.S[k], part)
                lm.mirror(buf, k)
            used = t + 1
            for obs in trace:
                obs.on_step(buf.S)
            if recompute:
                lm.set_error(buf, y, lm.probs(buf.S), self._sign)
            if self.early_stop and stop.settled(resid, used):
                break
        return resid, used, float(used)

    def _run_adaptive(self, buf, length: float, nudged: bool, recompute: bool,
                      y) -> tuple[float, int, float]:
        """Heun-Euler embedded pair with step-size control: the local error estimate
        ``r/2 max |f(s_pred) - f(s)|`` is kept below ``atol``; dt never exceeds
        ``dt_max_over_tau`` tau."""
        lm = self.map
        r, elapsed, used, resid = self.r, 0.0, 0, float("inf")
        trace = self.observers
        while elapsed < length - 1e-12:
            if self.max_steps and used >= self.max_steps:
                break
            r = min(r, length - elapsed)
            lm.eval(buf, nudged)
            resid = 0.0
            for k in self.layers:        # s0 := s, K1 := f(s) (in H), s := s + r K1
                resid = max(resid, kernels.heun_predict(buf.S[k], buf.H[k], buf.S0[k], r))
            if self.early_stop and resid < self.tol:
                for k in self.layers:    # converged at the start of this step: undo it
                    np.copyto(buf.S[k], buf.S0[k])
                    lm.mirror(buf, k)
                break
            while True:
                for k in self.layers:
                    lm.mirror(buf, k)
                if recompute:
                    lm.set_error(buf, y, lm.probs(buf.S), self._sign)
                lm.eval(buf, nudged)
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
                lm.mirror(buf, k)
            elapsed += r
            used += 1
            for obs in trace:
                obs.on_step(buf.S)
            if recompute:
                lm.set_error(buf, y, lm.probs(buf.S), self._sign)
            grow = 2.0 if err == 0.0 else min(2.0, 0.9 * math.sqrt(self.atol / err))
            r = min(self.r_max, r * max(grow, 0.2))
        return resid, used, elapsed

    # ------------------------------------------------------------------ phases
    def free(self, x: np.ndarray) -> PhaseResult:
        """Free phase for T (units of tau) from the map's start (zeros for dense layers, the
        feed-forward response to a blank input for conv layers); x: (B, n_in)."""
        self.sync()
        buf = self.map.buffers(x.shape[0])
        batch = self.map.drive_input(buf, x)
        self.map.load_state(buf, None)
        resid, used, tau = self._run(buf, self.T, False, None, {})
        res = self._result([x] + [buf.S[k].copy() for k in self.layers], resid, used, tau, buf)
        res.batch = batch
        return res

    def _result(self, s: list, resid: float, used: int, tau: float, buf) -> PhaseResult:
        lm = self.map
        S = dict(enumerate(s))
        heads = {e: lm.head(e, S, self.readout_reads) for e in lm.heads}
        mean = ([s[0]] + [buf.A[k] / self._navg for k in self.layers]
                if self._navg else None)
        e = e_mean = None
        if not lm.emits_states:
            e = lm.emitted(s)
            if self._navg:
                e_mean = [s[0]] + [buf.E[k] / self._navg for k in self.layers]
        return PhaseResult(s, heads.get(self.L + 1), resid, used, tau,
                           heads if len(heads) > 1 else None, mean, e, e_mean)

    def nudged(self, free: PhaseResult, y: np.ndarray, sign: float = 1.0) -> PhaseResult:
        """Nudged phase from the free state for K, nudge ``sign * beta_f * (y - p) @ B_f``
        into layer L (and every head's into its layer; sign -1: the -beta_f phase of centered
        nudging).  Reuses the input drive the free phase read (``free.batch``)."""
        self.sync()
        self._sign = float(sign)
        lm = self.map
        buf = lm.buffers(free.s[0].shape[0])
        lm.load_batch(buf, free.batch)
        lm.load_state(buf, free.s)
        probs = free.heads or {self.L + 1: free.p}
        probs0 = {e: p for e, p in probs.items() if e in lm.nudging}
        lm.set_error(buf, y, probs0, self._sign)
        try:
            resid, used, tau = self._run(buf, self.K, True, y, probs0)
        finally:
            self._sign = 1.0
        res = self._result([free.s[0]] + [buf.S[k].copy() for k in self.layers], resid, used,
                           tau, buf)
        res.batch = free.batch
        return res

    def step_map(self, s: list, x: np.ndarray | None = None) -> list:
        """One free step of the discrete map from states [x, s_1, ..., s_L]: [x, f_1(s), ...,
        f_L(s)] (new arrays; the input drive is read again when ``x`` is given); for
        matrix-free Jacobian-vector products and Lyapunov exponents."""
        lm = self.map
        buf = lm.buffers(s[0].shape[0])
        if x is not None:
            lm.drive_input(buf, x)
        lm.load_state(buf, s)
        lm.eval(buf, False)
        return [s[0]] + [buf.H[k].copy() for k in self.layers]

    def start_state(self, x: np.ndarray) -> list:
        """[x, s_1(0), ..., s_L(0)]: the states a free phase of x starts from."""
        lm = self.map
        buf = lm.buffers(x.shape[0])
        lm.drive_input(buf, x)
        lm.load_state(buf, None)
        return [x] + [buf.S[k].copy() for k in self.layers]


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

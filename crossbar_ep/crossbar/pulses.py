"""The crossbar backend: which projections live on crossbars, their pulse rules and the
observers of their reads and pulses.

:func:`attach_crossbars` programs the initial (Glorot) weights of the chosen projections into
:class:`~crossbar_ep.crossbar.array.CrossbarMatrix` operators through the device model and puts them
into the network in place of the digital matrices.  The settle loop reads them like any weight
operator (stacked when their reads are exact, read by read otherwise); each learns through its
pulse rule (:class:`DeterministicPulses`, :class:`StochasticCoincidence`); a
:class:`PulseStats` and an :class:`~crossbar_ep.crossbar.energy.EnergyMeter` observe them.
"""

from __future__ import annotations

from dataclasses import replace

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from crossbar_ep import fastrng
from crossbar_ep.crossbar.array import CrossbarMatrix
from crossbar_ep.crossbar.update_settings import UpdateSettings


@numba.njit(cache=True)
def _add_abs(acc, n):
    for i in range(acc.size):
        acc[i] += abs(n[i])


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of a uint64 (LLVM ctpop: one instruction where the CPU has it)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


_P_BITS = 24  # resolution of the firing probabilities: 2^-24, stochastically rounded


@numba.njit(cache=True)
def bit_streams(P, bl, seed):
    """Random bit streams (B, words, n) of uint64, words = ceil(bl / 64): bit t of stream
    (b, j) is 1 with probability P[b, j], independently, for the bl slots (bits beyond bl are
    0).  Built without a loop over slots by the binary-expansion method: m = P 2^24
    (stochastically rounded, so E = P exactly) and, from the least significant bit of m up,
    ``r = r | R`` for a 1 bit and ``r = r & R`` for a 0 bit, with fresh random words R from
    per-lane xorshift128+ streams (vectorised across the n lanes)."""
    B, n = P.shape
    words = (bl + 63) // 64
    out = np.empty((B, words, n), np.uint64)
    s0 = np.empty(n, np.uint64)
    s1 = np.empty(n, np.uint64)
    m = np.empty(n, np.uint64)
    k = fastrng.key(seed)
    fastrng.seed_lanes(k, s0, s1)
    full = np.uint64(1 << _P_BITS)
    zero, one, ones = np.uint64(0), np.uint64(1), ~np.uint64(0)
    rem = bl % 64
    tail = (one << np.uint64(rem)) - one if rem else ones
    for b in range(B):
        for j in range(n):
            x = P[b, j] * np.float64(full)
            f = np.floor(x)
            m[j] = np.uint64(f) + (one if fastrng.uniform(k, b * n + j) < x - f else zero)
        for w in range(words):
            r = out[b, w]
            r[:] = zero
            for t in range(_P_BITS):
                sh = np.uint64(t)
                for j in range(n):
                    R = fastrng.lane_u64(s0, s1, j)
                    bm = zero - ((m[j] >> sh) & one)
                    r[j] = (r[j] & R) | (bm & (r[j] | R))
            keep = tail if w == words - 1 else ones
            for j in range(n):
                if m[j] >= full:
                    r[j] = keep
                elif m[j] == zero:
                    r[j] = zero
                else:
                    r[j] &= keep
    return out


@numba.njit(cache=True)
def coincidences(rows, sx, cols, sd):
    """Signed coincidence counts (n_out, n_in) summed over the batch: device (i, j) counts
    the slots where row j's and column i's streams (B, words, n) both fire, with sign
    sx[b, j] * sd[b, i]."""
    B, words, n_in = rows.shape
    n_out = cols.shape[2]
    out = np.zeros((n_out, n_in), np.int64)
    for i in range(n_out):
        acc = out[i]
        for b in range(B):
            s = sd[b, i]
            if s == 0:
                continue
            sb = sx[b]
            for w in range(words):
                c = cols[b, w, i]
                if c == 0:
                    continue
                rb = rows[b, w]
                for j in range(n_in):
                    acc[j] += s * sb[j] * np.int64(_popcount(rb[j] & c))
    return out


@numba.njit(cache=True)
def binomial_reference(P, sx, Q, sd, bl, seed):
    """Per device and sample an independent Binomial(bl, P q) draw, summed over the batch
    (the marginal law of :func:`coincidences`, for tests)."""
    np.random.seed(seed)
    B, n_in = P.shape
    out = np.zeros((Q.shape[1], n_in), np.int64)
    for i in range(Q.shape[1]):
        for b in range(B):
            for j in range(n_in):
                r = P[b, j] * Q[b, i]
                if r > 0.0:
                    out[i, j] += sx[b, j] * sd[b, i] * np.random.binomial(bl, r)
    return out


def coincidence_counts(cb: CrossbarMatrix, x: np.ndarray, delta: np.ndarray, lr: float,
                       bl: int, management: bool, rng: np.random.Generator) -> np.ndarray:
    """Stochastic pulse coincidence (Gokmen & Vlasov 2016) for the batch-mean update
    lr * mean_b(delta_b outer x_b): rows fire with p = A|x|, columns with q = B|delta|,
    A B = lr / (B_batch * bl * dw_min_in_weight_units); update management balances A and B by
    sqrt(max|delta| / max|x|).  Expected signed count = lr * mean(delta x) / step."""
    Bn = x.shape[0]
    step_w = cb.card.mean_step * 2 * cb.scale / (cb.card.w_max - cb.card.w_min)
    c = lr / (Bn * bl * step_w)
    a = b = np.sqrt(c)
    mx, md = float(np.abs(x).max()), float(np.abs(delta).max())
    if management and mx > 0 and md > 0:
        a, b = a * np.sqrt(md / mx), b * np.sqrt(mx / md)
    P = np.minimum(a * np.abs(x), 1.0)
    Q = np.minimum(b * np.abs(delta), 1.0)
    rows = bit_streams(np.ascontiguousarray(P, dtype=float), bl, int(rng.integers(0, 2**62)))
    cols = bit_streams(np.ascontiguousarray(Q, dtype=float), bl, int(rng.integers(0, 2**62)))
    return coincidences(rows, np.sign(x).astype(np.int64), cols,
                        np.sign(delta).astype(np.int64))


class DeterministicPulses:
    """Pulse rule: ``n = stochastic_round(lr * scale * delta.T @ pre / step)`` pulses per
    device (a differential pair splits them), capped at ``max_pulses``; the ideal device takes
    the exact change.

    Every rule reads its parameters from ``settings`` (:class:`UpdateSettings`, the
    ``crossbar.update`` section; keyword overrides replace its fields, the scheme defaults to
    the class's first), draws from ``rng`` and names the ``schemes`` it implements."""

    schemes: tuple = ("deterministic",)

    def __init__(self, settings: UpdateSettings | None = None,
                 rng: np.random.Generator | None = None, **overrides):
        s = settings if settings is not None else UpdateSettings(scheme=self.schemes[0])
        self.settings = replace(s, **overrides) if overrides else s
        if self.settings.scheme not in self.schemes:
            raise ValueError(f"{type(self).__name__} implements {', '.join(self.schemes)}, "
                             f"not {self.settings.scheme!r}")
        self.rng = rng if rng is not None else np.random.default_rng(0)

    @property
    def max_pulses(self) -> int | None:
        return self.settings.max_pulses

    def apply(self, cb: CrossbarMatrix, pre: np.ndarray, delta: np.ndarray,
              scale: float) -> int:
        g = np.matmul(delta.T, pre)
        g *= scale
        return cb.apply_update(cb.lr * g, self.max_pulses)


class StochasticCoincidence(DeterministicPulses):
    """Pulse rule of Gokmen & Vlasov (2016): stochastic bit streams on rows and columns, a
    device steps where they coincide (:func:`coincidence_counts`); the ideal device falls back
    to the exact change.  ``bl`` and ``update_management`` from the settings."""

    schemes = ("stochastic",)

    def apply(self, cb, pre, delta, scale):
        if not cb.card.pulsed:
            return super().apply(cb, pre, delta, scale)
        s = self.settings
        n = coincidence_counts(cb, pre, delta, cb.lr * scale * pre.shape[0], s.bl,
                               s.update_management, self.rng)
        return cb.write_pulses(n)


class PulseStats:
    """Observer of the crossbar operators' updates: pulses, updates and programming energy
    per array, optional per-device pulse totals; holds the devices' rng for checkpoints."""

    def __init__(self, crossbars: dict, rng: np.random.Generator):
        self.crossbars, self.rng = crossbars, rng
        self._names = {id(cb): name for name, cb in crossbars.items()}
        self.stats: dict = {}
        self._device_totals = None  # name -> pulses per device since track_devices(True)

    def on_read(self, op, v, transposed) -> None:
        pass

    def on_update(self, cb, info: dict) -> None:
        name = self._names[id(cb)]
        counts = info.get("counts")
        if self._device_totals is not None and counts is not None:
            tot = self._device_totals.get(name)
            if tot is None:
                tot = self._device_totals[name] = np.zeros(counts.shape, np.int32)
            _add_abs(tot.reshape(-1), counts.reshape(-1))
        s = self.stats.setdefault(name, {"pulses": 0, "updates": 0, "program_J": 0.0})
        s["pulses"] += info["pulses"]
        s["program_J"] += info["program_J"]
        s["updates"] += 1
        for k, v in info.items():     # a rule's own statistics (mixed precision, Tiki-Taka)
            if k not in ("pulses", "program_J", "counts") and isinstance(v, (int, float)):
                s[k] = v if k.endswith(("_rms", "_at_bound")) else s.get(k, 0) + v

    @property
    def last_counts(self) -> dict:
        """Signed pulse counts (n_out, n_in) of each array's last update (pulsed cards)."""
        return {k: cb.last_counts for k, cb in self.crossbars.items()
                if cb.last_counts is not None}

    def track_devices(self, on: bool) -> None:
        """Start (or stop) summing |pulses| per device over updates."""
        self._device_totals = {} if on else None

    def take_device_totals(self) -> dict:
        """Pulses per device (int32, (n_out, n_in)) since tracking started; resets them."""
        out = self._device_totals or {}
        if self._device_totals is not None:
            self._device_totals = {}
        return out

    def take_stats(self) -> dict:
        """Pulses and updates per projection since the last call, and the fraction of its
        devices now at a bound (``at_bound``)."""
        out, self.stats = self.stats, {}
        for name, s in out.items():
            cb = self.crossbars[name]
            s["at_bound"] = cb.at_bound_fraction()
            if hasattr(cb.rule, "stats"):      # e.g. the Tiki-Taka fast array's bounds
                s.update(cb.rule.stats(cb))
        return out


PulseUpdater = PulseStats  # the name older code and notebooks used

"""The device fit's view of one registered model, read from its parameter spec alone
(:class:`~crossbar_ep.devices.registry.Param`: ``start``, ``anchor``, ``spread_of``, ``noise``
and the physical range), and the simulation of one device's measured trains.

- :class:`ModelSpec`: which parameters the fit estimates per device (``varying``: those with
  a spread, the anchors and the device bounds), which are common to all devices (fitted, no
  spread), which are held, which are spreads and which is the cycle-to-cycle or write noise;
- :class:`Frame`: the card's map between conductance (S) and state w;
- :class:`DeviceTrains`: one device's trains in w, simulated by the Numba train kernel
  (:mod:`crossbar_ep.devices.fit_kernel`) for a parameter set.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from crossbar_ep.devices.card import DeviceCard
from crossbar_ep.devices.registry import REQUIRED, model_class
from crossbar_ep.errors import CrossbarEPError

BOUNDS = ("w_min", "w_max")


class ModelSpec:
    """The fit roles of one model's parameters (see the module docstring)."""

    def __init__(self, model: str, fixed: dict | None = None):
        self.model = model
        self.cls = cls = model_class(model)
        if not cls.pulsed:
            raise CrossbarEPError(f"model {model}: takes exact updates, nothing to fit")
        self.params = spec = cls.params
        fixed = dict(fixed or {})
        for k in fixed:
            if k not in spec:
                raise CrossbarEPError(f"--fix {k}: not a parameter of model {model} (it uses: "
                                      f"{', '.join(spec)})")
        self.fixed = fixed
        self.bounds = tuple(b for b in BOUNDS if b in spec and b in getattr(
            cls, "bound_params", BOUNDS))
        spread_targets = {t for p in spec.values() for t in p.spread_of}
        self.fitted = [k for k, p in spec.items() if p.start is not None and k not in fixed
                       and k not in self.bounds and not p.spread_of and not p.noise]
        self.anchors = [k for k in self.fitted if spec[k].anchor]
        self.varying = [k for k in self.fitted if k in spread_targets or spec[k].anchor]
        self.common = [k for k in self.fitted if k not in self.varying]
        self.spreads = [k for k, p in spec.items() if p.spread_of and k not in fixed
                        and all(t in self.varying or t in self.bounds for t in p.spread_of)]
        self.c2c = next((k for k, p in spec.items() if p.noise == "c2c" and k not in fixed),
                        None)
        self.write = next((k for k, p in spec.items() if p.noise == "write" and k not in fixed),
                          None)
        missing = [k for k, p in spec.items() if p.default is REQUIRED and p.start is None
                   and k not in fixed and k not in self.bounds]
        if missing:
            raise CrossbarEPError(f"model {model}: the parameters {', '.join(missing)} have no "
                                  f"start guess in the model's spec; give them with --fix")

    def base(self, frame: "Frame", step: float) -> dict:
        """Every parameter's value before the fit: held ones at their fixed value or default,
        fitted ones at their start, spreads and noise 0, the bounds at the frame."""
        out = {}
        for k, p in self.params.items():
            if k in self.fixed:
                v = self.fixed[k]
            elif k in self.bounds:
                v = frame.w_lo if k == "w_min" else frame.w_hi
            elif p.spread_of or p.noise:
                v = 0.0
            elif p.start is not None:
                v = self.start(k, frame, step)[0]
            else:
                v = p.default
            out[k] = tuple(v) if isinstance(v, list) else v
        return out

    def start(self, k: str, frame: "Frame", step: float) -> list:
        """The candidate start values of a fitted parameter (``step``: the data's median step
        per pulse, w units)."""
        s = self.params[k].start
        if s == "step":
            return [step]
        if s == "states":
            return [float(max(1.0, round((frame.w_hi - frame.w_lo) / step)))]
        if isinstance(s, tuple):
            return list(s)
        return [s]

    def candidates(self, frame: "Frame", step: float) -> list:
        """Start combinations of the parameters with several candidate starts (at most 8)."""
        multi = [k for k in self.fitted if isinstance(self.params[k].start, tuple)]
        combos = list(itertools.product(*[self.start(k, frame, step) for k in multi]))[:8]
        return [dict(zip(multi, c)) for c in combos] or [{}]

    def ls_bounds(self, k: str, x0: float) -> tuple:
        """Least-squares bounds of a scalar parameter: its physical range, kept off zero for
        'pos' kinds and on the start's side of zero for 'nonzero'."""
        p = self.params[k]
        lo, hi = p.lo, p.hi
        if p.kind in ("pos", "posint"):
            lo = max(lo, 1e-9 * abs(x0), 1.0 if p.kind == "posint" else 0.0)
        if p.kind == "nonzero":
            lo, hi = ((1e-3, hi) if x0 > 0 else (lo, -1e-3))
        return lo, hi

    def card(self, values: dict, frame: "Frame", conventions: dict) -> DeviceCard:
        """An unvalidated card of these parameter values (the bounds at the frame)."""
        params = dict(values)
        for b in self.bounds:
            params[b] = frame.w_lo if b == "w_min" else frame.w_hi
        return DeviceCard("fit", self.model, "fit", frame.g_lo, frame.g_hi, params,
                          conventions=dict(conventions))

    def device(self, values: dict, frame: "Frame", conventions: dict) -> tuple:
        """(P row (k,), constants c, wmin, wmax) of one noiseless device with these parameters
        (``values`` holds the device's own bounds under w_min, w_max)."""
        card = self.card(values, frame, conventions)
        cols = self.cls.draw(card, lambda: np.zeros(1), 1)
        p = np.array([float(np.asarray(v).reshape(-1)[0]) for v in cols.values()])
        c = np.ascontiguousarray(self.cls.constants(card), dtype=float)
        wmin = values.get("w_min", frame.w_lo)
        wmax = values.get("w_max", frame.w_hi)
        return p, c, float(wmin), float(wmax)


@dataclass
class Frame:
    """The card's linear map between conductance and state: [g_lo, g_hi] S <-> [w_lo, w_hi]."""

    g_lo: float
    g_hi: float
    w_lo: float
    w_hi: float

    def to_w(self, g):
        return self.w_lo + (np.asarray(g, float) - self.g_lo) / (self.g_hi - self.g_lo) * \
            (self.w_hi - self.w_lo)

    def to_g(self, w):
        return self.g_lo + (np.asarray(w, float) - self.w_lo) / (self.w_hi - self.w_lo) * \
            (self.g_hi - self.g_lo)

    @property
    def w_span(self) -> float:
        return self.w_hi - self.w_lo


class DeviceTrains:
    """One device's trains in state units: starts ``w0``, signs ``d``, pulse counts ``n``
    (one per train) and the reads ``y``.  The simulation runs segments of at most
    ``horizon`` reads, each from the measured read before it (None: whole trains from their
    start, the output error; 1: every read predicted from the one before, the one-step
    prediction error)."""

    def __init__(self, trains: list, frame: Frame, horizon: int | None = None):
        self.trains = trains
        self.w0 = np.ascontiguousarray(frame.to_w([t.g0 for t in trains]))
        self.d = np.array([t.sign for t in trains], np.int64)
        self.n = np.array([t.n_pulses for t in trains], np.int64)
        self.y = frame.to_w(np.concatenate([t.g for t in trains]))
        ys = np.r_[self.w0, self.y]
        self.y_min, self.y_max = float(ys.min()), float(ys.max())
        self.jitter = self._jitter()
        self.horizon = horizon
        w0, d, n, ri, ci = [], [], [], [], []
        k = 0
        for i, t in enumerate(trains):
            m = t.offsets.size
            h = m if horizon is None else horizon
            for s in range(0, m, h):
                o0 = 0 if s == 0 else int(t.offsets[s - 1])
                w0.append(self.w0[i] if s == 0 else self.y[k + s - 1])
                d.append(t.sign)
                seg = t.offsets[s:s + h] - o0
                n.append(int(seg[-1]))
                ri += [len(w0) - 1] * seg.size
                ci += list(seg - 1)
            k += m
        self.sw0 = np.ascontiguousarray(w0, dtype=float)
        self.sd = np.array(d, np.int64)
        self.sn = np.array(n, np.int64)
        self.ri, self.ci = np.array(ri, np.int64), np.array(ci, np.int64)
        self.out = np.zeros((self.sn.size, int(self.sn.max())))

    def _jitter(self) -> float:
        """How far reads scatter around the device's state (w): 3 x the read noise from the
        anticorrelation of consecutive read differences, plus 2 median (nonzero) steps."""
        b, _s, a, tid, _p = self.pairs()
        if a.size < 4:
            return 0.0
        dy = a - b
        same = tid[1:] == tid[:-1]
        lag = float(np.mean(dy[1:][same] * dy[:-1][same])) if same.any() else 0.0
        moving = np.abs(dy)[np.abs(dy) > 0]          # plateaus at a bound do not count
        med = float(np.median(moving)) if moving.size else 0.0
        return 3.0 * math.sqrt(max(-lag, 0.0)) + 2.0 * med

    @property
    def size(self) -> int:
        return self.y.size

    def simulate(self, step, p, c, wmin, wmax) -> np.ndarray:
        """The noiseless states at every read, shape (reads,)."""
        from crossbar_ep.devices.fit_kernel import train_kernel
        train_kernel(step, self.sw0, self.sd, self.sn, float(wmin), float(wmax),
                     np.ascontiguousarray(p, dtype=float), c, self.out)
        return self.out[self.ri, self.ci]

    def pairs(self) -> tuple:
        """Consecutive reads one pulse apart: (state before, sign, state after, train index,
        position in train), flat arrays."""
        before, sign, after, tid, pos = [], [], [], [], []
        k = 0
        for i, t in enumerate(self.trains):
            ys = self.y[k:k + t.offsets.size]
            prev_w, prev_o = self.w0[i], 0
            for j, o in enumerate(t.offsets):
                if o - prev_o == 1:
                    before.append(prev_w)
                    sign.append(t.sign)
                    after.append(ys[j])
                    tid.append(i)
                    pos.append(j)
                prev_w, prev_o = ys[j], o
            k += t.offsets.size
        return (np.array(before), np.array(sign, np.int64), np.array(after), np.array(tid),
                np.array(pos))


def median_step(devs: list) -> float:
    """The data's median absolute state change per pulse (w units), over all devices (reads
    k pulses apart count as k steps of a k-th of the change)."""
    steps = []
    for dt in devs:
        k = 0
        for i, t in enumerate(dt.trains):
            ys = np.r_[dt.w0[i], dt.y[k:k + t.offsets.size]]
            steps.append(np.abs(np.diff(ys)) / np.diff(np.r_[0, t.offsets]))
            k += t.offsets.size
    s = np.concatenate(steps) if steps else np.zeros(0)
    s = s[s > 0]
    if s.size == 0:
        raise CrossbarEPError("the conductance never changes between consecutive pulses; "
                              "nothing to fit")
    return float(np.median(s))


def read_noise_share(devs: list) -> float:
    """The share of the reads' pulse-to-pulse scatter that is read (write) noise rather than
    cycle-to-cycle noise: read noise e makes consecutive differences anticorrelated,
    cov(dy_k, dy_k+1) = -s_e^2 of var(dy) = s_c^2 + 2 s_e^2 (differences taken about their
    running mean over 9 pulses, which follows the state-dependent step)."""
    var = cov = 0.0
    for dt in devs:
        _b, _s, _a, tid, pos = dt.pairs()
        dy = _a - _b
        for t in np.unique(tid):
            x = dy[tid == t]
            if x.size < 12:
                continue
            x = x - np.convolve(x, np.ones(9) / 9, mode="same")
            x = x[4:-4]
            var += float(x @ x)
            cov += float(x[1:] @ x[:-1])
    if var <= 0:
        return 0.0
    return float(min(max(-2.0 * cov / var, 0.0), 1.0))


def finite(x) -> bool:
    return x is not None and all(math.isfinite(v) for v in np.atleast_1d(x))

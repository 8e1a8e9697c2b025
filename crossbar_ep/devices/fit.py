"""Fit a device card to measured pulse trains: per-device least squares on the model's own
step, then the card's nominal values, device-to-device spreads and cycle-to-cycle noise.

The method (``docs/devices.md``, "Your own device"):

1. **Frame.**  The card maps [g_min_S, g_max_S] to [w_min, w_max]; w_min, w_max are a
   convention (the spec's start, or ``fixed``), the conductance range starts at the data's
   extremes and moves to the mean of the devices' fitted bounds (passes until it settles).
2. **Per-device fits** (:func:`fit_device`, ``scipy.optimize.least_squares``): each train is
   simulated without noise from its measured start through the model's compiled step (the
   pulse kernel's), and the residuals at every read are minimised.  Stage 1 fits every
   parameter with a start guess plus the device's own bounds; the parameters without a
   device-to-device spread (*common*) are then set to their mean over the devices, and stage
   2 refits the others (*varying*) per device with the common ones held.
3. **Card** (:mod:`crossbar_ep.devices.fit_stats`): nominal values and spreads by matching the
   mean and covariance of the devices' fitted per-device parameters to those of the model's own
   device draw; cycle-to-cycle and write noise from one-pulse residuals; confidence intervals;
   AIC and BIC for model selection (:mod:`crossbar_ep.devices.fit_card`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from crossbar_ep.devices.fit_model import DeviceTrains, Frame, ModelSpec, median_step
from crossbar_ep.errors import CrossbarEPError

MAX_PASSES = 4            # frame updates (the conductance range from the devices' bounds)
FRAME_TOL = 1e-3          # of the range: a frame that moves less has settled


@dataclass
class DeviceFit:
    """One device's fitted parameters (bounds included), which of them the data identify,
    the residual sum of squares (w^2) and the number of reads."""

    values: dict
    identified: dict
    rss: float
    n: int
    sd: dict = field(default_factory=dict)    # Jacobian standard errors (w^2 noise of rss/n)


class Layout:
    """A flat parameter vector <-> named values (list parameters take one entry per node;
    'nonzero' parameters, scales whose inverse enters the step smoothly, are fitted as their
    reciprocal)."""

    def __init__(self, names: list, values: dict, spec: ModelSpec):
        self.entries = []
        for k in names:
            v = values[k]
            if isinstance(v, tuple):
                self.entries += [(k, i) for i in range(len(v))]
            else:
                self.entries.append((k, None))
        self.inv = np.array([i is None and k in spec.params and spec.params[k].kind ==
                             "nonzero" for k, i in self.entries], bool)

    def pack(self, values: dict) -> np.ndarray:
        x = np.array([values[k] if i is None else values[k][i] for k, i in self.entries],
                     float)
        x[self.inv] = 1.0 / x[self.inv]
        return x

    def unpack(self, x: np.ndarray, values: dict) -> dict:
        x = np.array(x, float)
        x[self.inv] = 1.0 / x[self.inv]
        out = dict(values)
        lists = {}
        for (k, i), v in zip(self.entries, x):
            if i is None:
                out[k] = float(v)
            else:
                lists.setdefault(k, list(values[k]))[i] = float(v)
        out.update({k: tuple(v) for k, v in lists.items()})
        return out


def entry_bounds(spec: ModelSpec, layout: Layout, x0: np.ndarray, dt: DeviceTrains | None,
                 span: float) -> tuple:
    """Least-squares bounds of a layout's entries: the physical ranges (on the start's side of
    zero for reciprocals), and for a device's bounds (``dt``) its data's extremes, with no
    bound inside the data by more than the data's noise."""
    lb, ub = np.empty_like(x0), np.empty_like(x0)
    for j, (k, i) in enumerate(layout.entries):
        if k in ("w_min", "w_max"):
            mid = 0.5 * (dt.y_min + dt.y_max)
            if k == "w_min":
                lb[j], ub[j] = dt.y_min - span, min(dt.y_min + dt.jitter, mid)
            else:
                lb[j], ub[j] = max(dt.y_max - dt.jitter, mid), dt.y_max + span
        elif i is not None:
            lb[j], ub[j] = spec.params[k].lo, spec.params[k].hi
        elif layout.inv[j]:                  # 1 / v, on the start's side of zero
            lb[j], ub[j] = sorted(1.0 / np.array(spec.ls_bounds(k, 1.0 / x0[j])))
        else:
            lb[j], ub[j] = spec.ls_bounds(k, x0[j])
    return lb, ub


def _inside(x0, lb, ub):
    pad = 1e-9 * np.maximum(np.abs(x0), 1e-6)
    return np.clip(x0, lb + pad, ub - pad)


def fit_device(spec: ModelSpec, dt: DeviceTrains, names: list, values: dict, frame: Frame,
               conventions: dict, step_fn) -> DeviceFit:
    """Least squares of one device's reads over the parameters ``names`` (others held at
    ``values``); the bounds w_min / w_max among ``names`` are the device's own."""
    from scipy.optimize import least_squares

    layout = Layout(names, values, spec)
    x0 = layout.pack(values)
    span = frame.w_span
    lb, ub = entry_bounds(spec, layout, x0, dt, span)
    x0 = _inside(x0, lb, ub)
    worst = 10.0 * (np.abs(dt.y).max() + span)

    def resid(x):
        vals = layout.unpack(x, values)
        p, c, wmin, wmax = spec.device(vals, frame, conventions)
        if not wmin < wmax:
            return np.full(dt.size, worst)
        r = dt.simulate(step_fn, p, c, wmin, wmax) - dt.y
        return np.where(np.isfinite(r), r, worst)

    res = least_squares(resid, x0, bounds=(lb, ub), x_scale="jac", method="trf",
                        ftol=1e-10, xtol=1e-10, gtol=1e-10, max_nfev=200)
    vals = layout.unpack(res.x, values)
    J = np.asarray(res.jac)
    scale = np.where(np.abs(res.x) > 0, np.abs(res.x), 1.0)
    scale[[k in ("w_min", "w_max") for k, _ in layout.entries]] = span
    sens = np.linalg.norm(J, axis=0) * scale
    ok = sens > 1e-6 * max(sens.max(), 1e-300)
    for j, (k, _i) in enumerate(layout.entries):
        if k in ("w_min", "w_max"):          # a bound is seen where it clips (a plateau of
            col = np.abs(J[:, j])            # 2 % of the reads: a train's noisy end is none)
            free = lb[j] + 1e-6 * span < res.x[j] < ub[j] - 1e-6 * span    # or bends trains,
            seen = np.count_nonzero(col > 1e-6 * col.max())               # not at a limit
            ok[j] = ok[j] and free and seen >= max(5, 0.02 * dt.size)
    rss = float(res.fun @ res.fun)
    identified, sd = {}, {}
    try:
        cov = np.linalg.pinv(J.T @ J) * rss / max(dt.size - x0.size, 1)
        err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    except np.linalg.LinAlgError:
        err = np.full(x0.size, math.nan)
    for j, (k, i) in enumerate(layout.entries):
        identified[k] = identified.get(k, True) and bool(ok[j])
        if i is None:
            sd[k] = float(err[j] / res.x[j] ** 2 if layout.inv[j] else err[j])
    return DeviceFit(vals, identified, rss, dt.size, sd)


def fit_joint(spec: ModelSpec, devs: list, fits: list, common: dict, frame: Frame,
              conventions: dict, step_fn) -> tuple:
    """Least squares of every device at once: the common parameters shared, each device's
    varying parameters and bounds its own (a sparse Jacobian: a device's reads depend on the
    common columns and its own).  Starts from the per-device fits; returns (common, fits)."""
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix

    names = spec.varying + list(spec.bounds)
    cl = Layout(spec.common, common, spec)
    dls = [Layout(names, f.values, spec) for f in fits]
    nc, nd = len(cl.entries), len(dls[0].entries)
    parts = [(cl, cl.pack(common), None)] + [(dl, dl.pack(f.values), dv)
                                             for dl, f, dv in zip(dls, fits, devs)]
    x0 = np.concatenate([x for _, x, _ in parts])
    lims = [entry_bounds(spec, lay, x, dv, frame.w_span) for lay, x, dv in parts]
    lb, ub = np.concatenate([a for a, _ in lims]), np.concatenate([b for _, b in lims])
    x0 = _inside(x0, lb, ub)
    rows = np.cumsum([0] + [dv.size for dv in devs])
    sparsity = lil_matrix((rows[-1], x0.size), dtype=int)
    for d in range(len(devs)):
        sparsity[rows[d]:rows[d + 1], :nc] = 1
        sparsity[rows[d]:rows[d + 1], nc + d * nd:nc + (d + 1) * nd] = 1
    worst = 10.0 * (max(np.abs(dv.y).max() for dv in devs) + frame.w_span)

    def split(x):
        com = cl.unpack(x[:nc], common)
        return com, [dl.unpack(x[nc + d * nd:nc + (d + 1) * nd], {**f.values, **com})
                     for d, (dl, f) in enumerate(zip(dls, fits))]

    def resid(x):
        _com, vals = split(x)
        out = []
        for dv, v in zip(devs, vals):
            p, c, wmin, wmax = spec.device(v, frame, conventions)
            r = dv.simulate(step_fn, p, c, wmin, wmax) - dv.y if wmin < wmax else \
                np.full(dv.size, worst)
            out.append(np.where(np.isfinite(r), r, worst))
        return np.concatenate(out)

    res = least_squares(resid, x0, jac_sparsity=sparsity, bounds=(lb, ub), method="trf",
                        x_scale="jac", tr_solver="lsmr", ftol=1e-9, xtol=1e-9, max_nfev=20)
    com, vals = split(res.x)
    r = res.fun
    new = [DeviceFit(v, f.identified, float(r[rows[d]:rows[d + 1]] @ r[rows[d]:rows[d + 1]]),
                     f.n, f.sd) for d, (v, f) in enumerate(zip(vals, fits))]
    if sum(f.rss for f in new) > sum(f.rss for f in fits):      # keep the better of the two
        return common, fits
    for k, p in spec.params.items():
        if k in com and p.kind == "posint":
            com[k] = float(max(1, round(com[k])))
    return com, new


@dataclass
class StageResult:
    """Per-device fits of the last pass, the frame, the common parameters' per-device
    estimates from stage 1, and the data's median step (w)."""

    frame: Frame
    fits: list
    stage1: list
    common: dict
    devs: list
    step: float
    passes: int
    notes: list


def _g_range(data, g_range) -> tuple:
    if g_range is not None:
        lo, hi = map(float, g_range)
        if not 0 <= lo < hi <= 1.0:
            raise CrossbarEPError(f"--g-range {lo:g} {hi:g}: need 0 <= G_min < G_max <= 1 S")
        return lo, hi
    g = data.g_all()
    lo, hi = float(g.min()), float(g.max())
    if not hi > lo:
        raise CrossbarEPError("every read has the same conductance; nothing to fit")
    return lo, hi


def _common_mean(spec: ModelSpec, fits: list) -> dict:
    out = {}
    for k in spec.common:
        vals = [f.values[k] for f in fits if f.identified.get(k, False)] or \
            [f.values[k] for f in fits]
        if spec.params[k].kind == "nonzero":     # averaged as the fit sees it: 1 / v
            v = 1.0 / np.mean(1.0 / np.array(vals, float))
        else:
            v = np.mean(np.array(vals, float), axis=0)
        if spec.params[k].kind == "posint":
            v = float(max(1, round(float(v))))
        out[k] = tuple(float(x) for x in v) if np.ndim(v) else float(v)
    return out


def run_stages(spec: ModelSpec, data, conventions: dict, g_range=None,
               log=lambda m: None, horizon: int | None = None) -> StageResult:
    """Stages 1 and 2 of the fit for every device, with the frame updated from the devices'
    bounds until it settles (module docstring)."""
    from crossbar_ep.devices.kernel import jit_step

    step_fn = jit_step(spec.cls.step)
    w_lo = float(spec.fixed.get("w_min", spec.params["w_min"].start
                                if "w_min" in spec.params else -1.0))
    w_hi = float(spec.fixed.get("w_max", spec.params["w_max"].start
                                if "w_max" in spec.params else 1.0))
    if not w_lo < w_hi:
        raise CrossbarEPError(f"--fix w_min={w_lo:g} w_max={w_hi:g}: w_min must be below w_max")
    frame = Frame(*_g_range(data, g_range), w_lo, w_hi)
    notes: list = []
    by_dev = [data.device_trains(d) for d in range(len(data.devices))]
    prev = None
    for npass in range(1, MAX_PASSES + 1):
        devs = [DeviceTrains(tr, frame, horizon) for tr in by_dev]
        step = median_step(devs)
        base = spec.base(frame, step)
        for a in spec.anchors:
            base[a] = spec.start(a, frame, step)[0]
        names1 = spec.common + [k for k in spec.varying if k not in spec.anchors] + \
            list(spec.bounds)
        order = sorted(range(len(devs)), key=lambda d: -devs[d].size)
        stage1 = [None] * len(devs)
        for d in order:
            own = {b: (devs[d].y_min if b == "w_min" else devs[d].y_max) for b in spec.bounds}
            if prev is not None:              # warm start from the last pass
                start = {**prev[d].values, **own}
                for a in spec.anchors:
                    start[a] = base[a]
                tries = [start]
            elif d == order[0]:               # the pilot device tries every candidate start
                tries = [{**base, **cand, **own} for cand in spec.candidates(frame, step)]
            else:
                tries = [{**stage1[order[0]].values, **own}]
            best = None
            for t in tries:
                f = fit_device(spec, devs[d], names1, t, frame, conventions, step_fn)
                if best is None or f.rss < best.rss:
                    best = f
            stage1[d] = best
        common = _common_mean(spec, stage1)
        if spec.common or spec.anchors:
            names2 = spec.varying + list(spec.bounds)
            fits = [fit_device(spec, dv, names2, {**f.values, **common}, frame, conventions,
                               step_fn) for dv, f in zip(devs, stage1)]
            if spec.common and len(devs) > 1:
                common, fits = fit_joint(spec, devs, fits, common, frame, conventions, step_fn)
        else:
            fits = stage1
        log(f"pass {npass}: G range {frame.g_lo:.4g} to {frame.g_hi:.4g} S, residual rms "
            f"{math.sqrt(sum(f.rss for f in fits) / sum(f.n for f in fits)):.3g} w")
        prev = fits
        if g_range is not None or not spec.bounds:
            break
        new = _frame_from_bounds(fits, frame, notes if npass == 1 else [])
        moved = max(abs(new.g_lo - frame.g_lo), abs(new.g_hi - frame.g_hi)) / \
            (frame.g_hi - frame.g_lo)
        if moved < FRAME_TOL:
            break
        for f in fits:                         # the bounds keep their conductance
            for b in spec.bounds:
                f.values[b] = float(new.to_w(frame.to_g(f.values[b])))
        frame = new
    return StageResult(frame, fits, stage1, common, devs, step, npass, notes)


def _frame_from_bounds(fits: list, frame: Frame, notes: list) -> Frame:
    """The frame whose conductance range is the mean of the devices' fitted bounds (where
    the data identify them; else the data's extreme stays)."""
    g = {}
    for b, default in (("w_min", frame.g_lo), ("w_max", frame.g_hi)):
        vals = [frame.to_g(f.values[b]) for f in fits if f.identified.get(b, False)]
        if vals:
            g[b] = float(np.mean(vals))
        else:
            g[b] = default
            notes.append(f"{b}: no train reaches or bends towards the devices' "
                         f"{'lower' if b == 'w_min' else 'upper'} bound; g_"
                         f"{'min' if b == 'w_min' else 'max'}_S is the data's extreme (give "
                         f"--g-range for the device's range)")
    g["w_min"] = max(g["w_min"], 0.0)
    if not g["w_min"] < g["w_max"] <= 1.0:
        return frame
    return Frame(g["w_min"], g["w_max"], frame.w_lo, frame.w_hi)

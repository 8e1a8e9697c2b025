"""``cx.fit_card`` / ``crossbar-ep device fit``: measured pulse trains -> a device card.

:func:`fit_model` fits one registered model (:mod:`crossbar_ep.devices.fit` for the per-device
least squares, :mod:`crossbar_ep.devices.fit_stats` for nominal values, spreads, noise,
intervals and information criteria); :func:`fit_card` fits one model or, with ``model="auto"``,
every registered pulsed model the spec makes fittable, ranks them by BIC (or AIC) and returns
the best as a :class:`FitResult`: the card (validated like any card file), a parameter table,
and the data and fits the figure (:mod:`crossbar_ep.plots.device_fit`) draws.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from crossbar_ep.devices import fit_stats as fs
from crossbar_ep.devices.fit import run_stages
from crossbar_ep.devices.fit_data import PulseData, read_pulse_data
from crossbar_ep.devices.fit_model import ModelSpec
from crossbar_ep.devices.registry import model_class, model_names
from crossbar_ep.errors import ConfigError, CrossbarEPError


@dataclass
class FitResult:
    """A fitted card and how it was obtained.  ``params``: the card's model parameters;
    ``ci``: 95 % intervals (name -> (lo, hi)); ``how``: what each value was estimated from;
    ``per_device``: each device's fitted values; ``ranking``: every model tried (auto)."""

    model: str
    conventions: dict
    params: dict
    g_min_S: float
    g_max_S: float
    ci: dict
    how: dict
    per_device: list
    rss: float
    n: int
    k: int
    aic: float
    bic: float
    rms_S: float
    notes: list
    data: PulseData
    frame: object
    seconds: float
    ranking: list = field(default_factory=list)
    criterion: str = "bic"
    text: dict = field(default_factory=dict)      # name, source, description of the card

    def card_dict(self, name: str | None = None, source: str | None = None,
                  description: str | None = None) -> dict:
        """The card as a mapping (a card file's content), with the fit's provenance in
        ``metadata.fit``."""
        files = [os.path.basename(p) for p, _ in self.data.files]
        raw = {"name": name or f"fitted {self.model}", "model": self.model,
               "source": source or f"fit to measured pulse trains ({', '.join(files)}) by "
                                   f"crossbar-ep device fit"}
        if description:
            raw["description"] = description
        raw["g_min_S"] = _round(self.g_min_S)
        raw["g_max_S"] = _round(self.g_max_S)
        raw["params"] = {k: _round(v) for k, v in self.params.items()}
        if self.conventions:
            raw["conventions"] = dict(self.conventions)
        fit = {"data": [{"file": p, "sha256": h} for p, h in self.data.files],
               "devices": len(self.data.devices), "cycles": self.data.cycles(),
               "reads": self.data.n_reads, "residual_rms_S": _round(self.rms_S),
               "aic": _round(self.aic), "bic": _round(self.bic),
               "confidence_95": {k: [_round(a), _round(b)] for k, (a, b) in self.ci.items()
                                 if math.isfinite(a) and math.isfinite(b)}}
        if self.ranking:
            fit["model_ranking"] = [{k: (_round(v) if isinstance(v, float) else v)
                                     for k, v in r.items() if not (isinstance(v, float) and
                                                                  not math.isfinite(v))}
                                    for r in self.ranking]
        if self.notes:
            fit["notes"] = list(self.notes)
        raw["metadata"] = {"fit": fit}
        return raw

    def card(self, **text):
        """The fitted card, validated (:func:`crossbar_ep.devices.card.card_from_dict`);
        ``text``: name, source, description (default: those of the last :meth:`write`)."""
        from crossbar_ep.devices.card import card_from_dict
        text = {**self.text, **text}
        try:
            return card_from_dict(self.card_dict(**text), "<fitted card>")
        except ConfigError as exc:
            raise CrossbarEPError(f"the fitted {self.model} card is not a valid card ({exc}); "
                                  f"the data may not fit this model: try --model auto or "
                                  f"another model") from None

    def write(self, path: str, **text) -> str:
        """Write the card file (YAML; atomically) after validating it; returns ``path``."""
        import yaml
        self.text = {k: v for k, v in text.items() if v}
        self.card()
        head = (f"# Device card fitted by crossbar-ep device fit: model {self.model}, "
                f"{len(self.data.devices)} devices, {self.data.cycles()} cycles, "
                f"{self.data.n_reads} reads.\n")
        body = yaml.safe_dump(self.card_dict(**self.text), sort_keys=False, width=100,
                              allow_unicode=True)
        _atomic_write(path, head + body)
        return path

    def table(self) -> str:
        """A Markdown report: the parameters with intervals and sources, the fit's residual,
        the model ranking and the per-device values."""
        from crossbar_ep.devices.fit_report import report
        return report(self)


def _round(v):
    if isinstance(v, (tuple, list)):
        return [_round(x) for x in v]
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    v = float(v)
    return float(f"{v:.6g}") if math.isfinite(v) else v


def _atomic_write(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise CrossbarEPError(f"{path}: cannot write ({exc.strerror or exc})") from None


def fit_model(data: PulseData, model: str, conventions: dict | None = None,
              fixed: dict | None = None, g_range=None, log=lambda m: None,
              horizon: int | None = None) -> FitResult:
    """Fit one registered pulsed model to the data (module docstring)."""
    from crossbar_ep.devices.kernel import jit_step

    t0 = time.perf_counter()
    spec = ModelSpec(model, fixed)
    conv = dict(conventions or {})
    st = run_stages(spec, data, conv, g_range, log, horizon)
    frame, fits, n_dev = st.frame, st.fits, len(st.fits)
    step_fn = jit_step(spec.cls.step)
    notes = list(st.notes)
    est = spec.base(frame, st.step)
    est.update(st.common)
    ci, how = {}, {}

    def ident(k, fl=fits):
        return [f for f in fl if f.identified.get(k, False)]

    for k in spec.common:
        vals = [f.values[k] for f in (ident(k, st.stage1) or st.stage1)]
        how[k] = f"common to the devices: mean of {len(vals)} device fits"
        if not isinstance(est[k], tuple):
            ci[k] = fs.t_interval(vals)[1]
        else:
            for i, col in enumerate(np.array(vals, float).T):
                ci[f"{k}[{i}]"] = fs.t_interval(col)[1]
    for k in spec.varying:
        good = ident(k) or fits
        vals = [f.values[k] for f in good]
        est[k] = float(1.0 / np.mean(1.0 / np.array(vals)) if spec.params[k].kind ==
                       "nonzero" else np.mean(vals))
        how[k] = f"nominal: {len(good)} device fits" + ("" if n_dev > 1 else " (one device)")
        ci[k] = fs.t_interval(vals)[1] if n_dev > 1 else _jac_ci(fits[0], k)
        if len(good) < n_dev:
            notes.append(f"{k}: identified on {len(good)} of {n_dev} devices")
    bounds_ok = {b: len(ident(b)) for b in spec.bounds}
    c2c, wn, per_noise = fs.noise(spec, fits, st.devs, frame, conv, step_fn)
    if spec.c2c:
        est[spec.c2c] = c2c
        how[spec.c2c] = "cycle-to-cycle: one-pulse residuals"
        ci[spec.c2c] = fs.t_interval([a for a, _ in per_noise])[1]
    if spec.write:
        unit = est.get("dw_min", 1.0) if spec.params[spec.write].unit == "dw_min" else 1.0
        est[spec.write] = wn / unit
        how[spec.write] = "write noise: anticorrelation of consecutive one-pulse residuals"
        lo, hi = fs.t_interval([b for _, b in per_noise])[1]
        ci[spec.write] = (lo / unit, hi / unit)
    lost = _spreads(spec, est, fits, st, conv)
    for k in spec.spreads:
        if k in lost:
            est[k] = 0.0
            how[k] = f"not estimated: {lost[k]}; set to 0"
        else:
            how[k] = f"device-to-device: moment match of {n_dev} devices"
            ci[k] = fs.spread_interval(est[k], n_dev)
    for k, p in spec.params.items():
        if p.spread_of and k not in spec.spreads and k not in spec.fixed:
            how[k] = "not estimated: what it spreads is held or common; set to 0"
    for k in spec.params:
        if k in spec.fixed:
            how[k] = "held (--fix)"
        elif k in spec.bounds:
            how[k] = "the card's state range (a convention; --fix to change)"
        elif k not in how:
            how[k] = "held at the model's default"
    g_ci = {}
    for b, key in (("w_min", "g_min_S"), ("w_max", "g_max_S")):
        if b in spec.bounds and bounds_ok[b] and g_range is None:
            g = [float(frame.to_g(f.values[b])) for f in ident(b)]
            g_ci[key] = fs.t_interval(g)[1]
            how[key] = f"mean of {len(g)} devices' fitted bounds"
        else:
            how[key] = "--g-range" if g_range is not None else "the data's extreme read"
    ci.update(g_ci)
    n = sum(f.n for f in fits)
    rss = sum(f.rss for f in fits)
    k_dev = sum(len(f.values[k]) if isinstance(f.values[k], tuple) else 1
                for f in fits[:1] for k in spec.varying + list(spec.bounds))
    k_all = sum(len(v) if isinstance(v, tuple) else 1 for k, v in st.common.items()) + \
        n_dev * k_dev
    aic, bic = fs.criteria(rss, n, k_all, 1e-3 * st.step)
    rms_w = math.sqrt(rss / n)
    params = {}
    for k, p in spec.params.items():
        v = est[k]
        params[k] = int(round(v)) if p.kind == "posint" else v
    for b in spec.bounds:
        params[b] = frame.w_lo if b == "w_min" else frame.w_hi
    per_device = [{"device": data.devices[d], **{k: f.values[k] for k in
                                                 spec.varying + list(spec.bounds)},
                   "rms_w": math.sqrt(f.rss / f.n)} for d, f in enumerate(fits)]
    return FitResult(model, conv, params, frame.g_lo, frame.g_hi, ci, how, per_device, rss, n,
                     k_all, aic, bic, rms_w * (frame.g_hi - frame.g_lo) / frame.w_span, notes,
                     data, frame, time.perf_counter() - t0)


def _jac_ci(f, k) -> tuple:
    sd = f.sd.get(k, math.nan)
    v = f.values[k]
    return (v - 1.96 * sd, v + 1.96 * sd) if math.isfinite(sd) else (math.nan, math.nan)


def _spreads(spec, est, fits, st, conv) -> dict:
    """Moment-match the varying nominal values and the spreads into ``est``; returns the
    spreads that could not be estimated (name -> why)."""
    frame, n_dev = st.frame, len(fits)
    lost = {}
    if n_dev < 2:
        return {k: "one device" for k in spec.spreads}
    X = np.array([fs.device_columns(spec, f.values, frame, conv) for f in fits])
    nb = len(spec.bounds)
    kp = X.shape[1] - nb
    simple = fs.simple_spreads(spec, fits)
    start = {**est, **simple}
    caps = {k: 2.0 * v + 1e-9 for k, v in simple.items()}
    of_bound = {k: spec.params[k].spread_of[0] for k in spec.spreads
                if set(spec.params[k].spread_of) <= set(spec.bounds)}
    nominal = [k for k in spec.varying if not isinstance(est[k], tuple)]
    unknowns = nominal + [k for k in spec.spreads if k not in of_bound]
    if unknowns:
        est.update(fs.Moments(spec, est, frame, conv, range(kp), unknowns)
                   .solve(X, start, caps))
    for k, b in of_bound.items():
        j = kp + spec.bounds.index(b)
        ok = [d for d, f in enumerate(fits) if f.identified.get(b, False)]
        nominal_b = frame.w_lo if b == "w_min" else frame.w_hi
        if len(ok) < 2:
            lost[k] = f"{b} identified on fewer than 2 devices"
        elif abs(nominal_b) < 1e-12:
            lost[k] = f"a relative spread of {b} = 0"
        else:
            est.update(fs.Moments(spec, est, frame, conv, [j], [k])
                       .solve(X[ok], start, caps))
    return lost


def choose_horizon(data: PulseData, g_range=None) -> tuple:
    """(horizon, read-noise share): one-pulse predictions (horizon 1) where cycle-to-cycle
    noise dominates the scatter of the reads (the prediction error is then unbiased), whole
    trains (None) where read noise does (:func:`~crossbar_ep.devices.fit_model.read_noise_share`
    over 0.5)."""
    from crossbar_ep.devices.fit_model import DeviceTrains, Frame, read_noise_share
    g = data.g_all()
    lo, hi = g_range if g_range is not None else (float(g.min()), float(g.max()))
    frame = Frame(lo, hi if hi > lo else lo + 1e-12, -1.0, 1.0)
    share = read_noise_share([DeviceTrains(data.device_trains(d), frame)
                              for d in range(len(data.devices))])
    return (None if share > 0.5 else 1), share


def fittable_models() -> list:
    """Registered pulsed models whose spec makes them fittable with no --fix."""
    out = []
    for m in model_names():
        if not model_class(m).pulsed:
            continue
        try:
            ModelSpec(m)
        except CrossbarEPError:
            continue
        out.append(m)
    return out


def fit_card(data, model: str = "auto", *, out: str | None = None, name: str | None = None,
             source: str | None = None, description: str | None = None,
             conventions: dict | None = None, fixed: dict | None = None, g_range=None,
             criterion: str = "bic", horizon="auto",
             log=lambda m: None) -> FitResult:
    """Fit a device card to measured pulse trains.

    ``data``: CSV path(s) (format: :mod:`crossbar_ep.devices.fit_data`) or a
    :class:`~crossbar_ep.devices.fit_data.PulseData`; ``model``: a registered pulsed model or
    ``"auto"`` (every fittable model, ranked by ``criterion`` 'bic' or 'aic');
    ``horizon``: 'auto' (:func:`choose_horizon`), 1 (each read predicted from the one before)
    or None (whole trains from their start);
    ``conventions``: the card's ``conventions`` the fit assumes; ``fixed``: parameters held
    at given values (w_min / w_max set the state range); ``g_range``: (G_min, G_max) in S
    instead of the devices' fitted bounds; ``out``: write the card there (with ``name``,
    ``source``, ``description``).  Returns the (best) :class:`FitResult`."""
    if criterion not in ("bic", "aic"):
        raise CrossbarEPError(f"criterion {criterion!r}: use bic or aic")
    if not isinstance(data, PulseData):
        data = read_pulse_data(data)
    if data.n_reads < 4:
        raise CrossbarEPError(f"{data.files[0][0] if data.files else 'data'}: {data.n_reads} "
                              f"reads are too few to fit a device model")
    if horizon == "auto":
        horizon = choose_horizon(data, g_range)
        log(f"read-noise share {horizon[1]:.2f}: " + ("whole trains (output error)"
                                                      if horizon[0] is None else
                                                      "one-pulse predictions"))
        horizon = horizon[0]
    elif horizon is not None and (not isinstance(horizon, int) or horizon < 1):
        raise CrossbarEPError(f"horizon {horizon!r}: use auto, None (whole trains) or a "
                              f"number of reads >= 1")
    if model == "auto":
        models = fittable_models()
    else:
        if model not in model_names():
            raise CrossbarEPError(f"--model {model}: unknown; use auto or one of "
                                  f"{', '.join(fittable_models())}")
        models = [model]
    results, ranking = [], []
    for m in models:
        try:
            r = fit_model(data, m, conventions, fixed, g_range, log, horizon)
            r.card()                                   # a model whose card is invalid loses
        except CrossbarEPError as exc:
            if len(models) == 1:
                raise
            ranking.append({"model": m, "failed": str(exc)})
            log(f"{m}: {exc}")
            continue
        results.append(r)
        ranking.append({"model": m, "k": r.k, "rms_S": r.rms_S, "aic": r.aic, "bic": r.bic})
        log(f"{m}: rms {r.rms_S:.3g} S, AIC {r.aic:.6g}, BIC {r.bic:.6g} ({r.seconds:.1f} s)")
    if not results:
        raise CrossbarEPError("no model could be fitted: " +
                              "; ".join(f"{r['model']}: {r['failed']}" for r in ranking))
    best = min(results, key=lambda r: getattr(r, criterion))
    if model == "auto":
        ranking.sort(key=lambda r: r.get(criterion, math.inf))
        best.ranking, best.criterion = ranking, criterion
    if out:
        best.write(out, name=name, source=source, description=description)
    return best

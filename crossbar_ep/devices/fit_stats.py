"""Statistics of the device fit: the card's nominal values and device-to-device spreads from
the per-device fits, the cycle-to-cycle and write noise from one-pulse residuals, confidence
intervals, and the information criteria that rank models.

**Nominal and spreads (method of moments).**  Each fitted device becomes the per-device
columns its pulse kernel would run with (the model's ``draw`` of a spread-free card of the
device's own values: dw_up, dw_dn, gamma, ...) plus its bounds.  The card's varying nominal
values and spreads are the ones whose own device draw (the model's ``draw_bounds`` and
``draw`` on 20000 devices, common random numbers) has the same mean and covariance of those
columns as the fitted devices: every model's draw, nonlinear or not, is inverted the same way.

**Noise.**  With the fitted parameters, each pair of reads one pulse apart gives a residual
``r = y_next - clip(y + step(y))``.  Write noise e (redrawn per pulse) makes consecutive
residuals anticorrelated, ``cov(r_k, r_k+1) = -s_w^2``, and adds ``2 s_w^2`` to their
variance; the cycle-to-cycle part is ``var(r) - 2 s_w^2 = s_c^2 u^2`` with u the model's noise
std of that pulse at unit parameter (``|step| c2c_std`` or the step's additive std).  Pairs whose
prediction lies near a bound are left out (clipping hides the noise there).
"""

from __future__ import annotations

import math

import numpy as np

from crossbar_ep.devices.fit_model import Frame, ModelSpec

N_DRAW = 8000             # devices drawn per moment evaluation
SEED = 20240             # common random numbers of the moment draws


def device_columns(spec: ModelSpec, values: dict, frame: Frame, conventions: dict) -> np.ndarray:
    """One fitted device as the columns of its kernel parameters, then its bounds."""
    p, _c, wmin, wmax = spec.device(values, frame, conventions)
    return np.r_[p, [wmin, wmax][:len(spec.bounds)]]


def draw_columns(spec: ModelSpec, params: dict, frame: Frame, conventions: dict,
                 n: int) -> np.ndarray:
    """(n, columns) per-device kernel parameters and bounds drawn from a card with
    ``params`` (spreads included), in the order of :func:`device_columns`."""
    rng = np.random.default_rng(SEED)
    card = spec.card(params, frame, conventions)
    xi = lambda: rng.standard_normal(n)  # noqa: E731
    wmin, wmax = spec.cls.draw_bounds(card, xi, n)
    cols = [np.broadcast_to(np.asarray(v, float), (n,)) for v in
            spec.cls.draw(card, xi, n).values()]
    cols += [wmin, wmax][:len(spec.bounds)]
    return np.stack(cols, axis=1)


class Moments:
    """Moment matching of ``unknowns`` (nominal values and spreads) on the device columns
    ``columns`` (module docstring)."""

    def __init__(self, spec: ModelSpec, base: dict, frame: Frame, conventions: dict,
                 columns, unknowns: list):
        self.spec, self.base, self.frame, self.conv = spec, base, frame, conventions
        self.columns = np.asarray(list(columns), int)
        self.unknowns = list(unknowns)

    def solve(self, X: np.ndarray, start: dict, caps: dict | None = None,
              n_draw: int = N_DRAW) -> dict:
        """The unknowns (name -> value) whose draw matches the mean and covariance of the
        device columns ``X`` (devices, all columns); ``caps``: upper limits of spreads (the
        raw spread of the fitted values bounds the true one)."""
        from scipy.optimize import least_squares

        spec, cols = self.spec, self.columns
        X = X[:, cols]
        mean = X.mean(axis=0)
        cov = np.cov(X, rowvar=False, ddof=1).reshape(cols.size, -1)
        iu = np.triu_indices(cols.size)
        diag = np.where(iu[0] == iu[1], 1 / math.sqrt(2), 1.0)

        def moments(x):
            params = {**self.base, **dict(zip(self.unknowns, x))}
            D = draw_columns(spec, params, self.frame, self.conv, n_draw)[:, cols]
            return D.mean(axis=0), np.cov(D, rowvar=False, ddof=1).reshape(cols.size, -1)

        def resid(x):
            m, c = moments(x)
            rc = (white @ (c - cov) @ white)[iu] * diag
            return np.r_[white @ (m - mean), rc]

        nominal = [k for k in self.unknowns if not spec.params[k].spread_of]
        x = np.array([start[k] for k in self.unknowns], float)
        lb = np.array([spec.ls_bounds(k, x[j])[0] if k in nominal else 0.0
                       for j, k in enumerate(self.unknowns)])
        caps = caps or {}
        ub = np.array([spec.ls_bounds(k, x[j])[1] if k in nominal else
                       min(spec.params[k].hi, caps.get(k, math.inf))
                       for j, k in enumerate(self.unknowns)])
        x = np.clip(x, lb + 1e-12, ub - 1e-12)
        for _ in range(3):      # weights: midway between the model's covariance at the last
            m, c = moments(x)   # estimate and the data's (either alone biases the spreads)
            white = _whitener(0.5 * (c + cov), m)
            x = least_squares(resid, x, bounds=(lb, ub), method="trf", x_scale="jac",
                              ftol=1e-8, xtol=1e-8, max_nfev=100).x
        return dict(zip(self.unknowns, map(float, x)))


def _whitener(cov: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """cov^(-1/2) (symmetric) of the columns, with a floor for columns that do not vary (a
    constant column weighs as a relative 1e-6 of its mean)."""
    floor = (1e-6 * np.maximum(np.abs(mean), 1e-12)) ** 2
    lam, V = np.linalg.eigh(cov + np.diag(floor))
    lam = np.maximum(lam, 1e-12 * max(lam.max(), 1e-300))
    return (V / np.sqrt(lam)) @ V.T


def simple_spreads(spec: ModelSpec, fits: list) -> dict:
    """Start values of the spreads: the std of the fitted values of what each spreads
    (relative where the spread is relative)."""
    out = {}
    for k in spec.spreads:
        par = spec.params[k]
        s = []
        for t in par.spread_of:
            v = np.array([f.values[t] for f in fits], float)
            sd = v.std(ddof=1) if v.size > 1 else 0.0
            s.append(sd / max(abs(v.mean()), 1e-12) if par.relative else sd)
        out[k] = float(min(np.sqrt(np.mean(np.square(s))), par.hi))
    return out


def noise(spec: ModelSpec, fits: list, devs: list, frame: Frame, conventions: dict,
          step_fn) -> tuple:
    """(c2c parameter, write parameter, per-device list of (c2c, write)) from one-pulse
    residuals (module docstring); None where the model has no such parameter."""
    from crossbar_ep.devices.fit_kernel import step_kernel

    per_dev, num, den, cross, npair, sq = [], 0.0, 0.0, 0.0, 0, 0.0
    for f, dt in zip(fits, devs):
        vals = dict(f.values)
        if spec.c2c:
            vals[spec.c2c] = 1.0                   # the noise std at unit parameter
        p, c, wmin, wmax = spec.device(vals, frame, conventions)
        card = spec.card(vals, frame, conventions)
        unit = float(spec.cls.c2c_std(card)) if spec.c2c else 0.0
        y0, d, y1, tid, pos = dt.pairs()
        if y0.size < 3:
            per_dev.append((math.nan, math.nan))
            continue
        y0c = np.clip(y0, wmin, wmax)
        s, add = np.empty_like(y0c), np.empty_like(y0c)
        step_kernel(step_fn, np.ascontiguousarray(y0c), d, wmin, wmax, p, c, s, add)
        u = np.where(add > 0, add, np.abs(s) * unit)
        pred = y0c + s
        r = y1 - np.clip(pred, wmin, wmax)
        margin = 0.01 * (wmax - wmin) + 2 * np.abs(s)
        for _ in range(2):
            keep = (pred > wmin + margin) & (pred < wmax - margin)
            rk, uk = r[keep], u[keep]
            nxt = keep[1:] & keep[:-1] & (tid[1:] == tid[:-1]) & (pos[1:] == pos[:-1] + 1)
            lag = float(np.sum(r[1:][nxt] * r[:-1][nxt]))
            sw2 = max(-lag / max(nxt.sum(), 1), 0.0) if spec.write else 0.0
            sc2 = max((float(rk @ rk) - 2 * sw2 * rk.size) / max(float(uk @ uk), 1e-300), 0.0)
            margin = 0.01 * (wmax - wmin) + np.abs(s) + 4 * np.sqrt(u * u * sc2 + 2 * sw2)
        num += float(rk @ rk)
        den += float(uk @ uk)
        cross += lag
        npair += int(nxt.sum())
        sq += rk.size
        per_dev.append((math.sqrt(sc2), math.sqrt(sw2)))
    sw2 = max(-cross / max(npair, 1), 0.0) if spec.write else 0.0
    sc2 = max((num - 2 * sw2 * sq) / max(den, 1e-300), 0.0)
    return (math.sqrt(sc2) if spec.c2c else None, math.sqrt(sw2) if spec.write else None,
            per_dev)


def t_interval(values, level: float = 0.95) -> tuple:
    """Mean and its two-sided Student-t interval over devices (nan without two values)."""
    from scipy import stats

    v = np.asarray([x for x in values if math.isfinite(x)], float)
    if v.size < 2:
        m = float(v.mean()) if v.size else math.nan
        return m, (math.nan, math.nan)
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
    h = float(stats.t.ppf(0.5 + level / 2, v.size - 1)) * se
    return m, (m - h, m + h)


def spread_interval(s: float, n: int, level: float = 0.95) -> tuple:
    """The chi-square interval of a standard deviation ``s`` estimated from n devices."""
    from scipy import stats

    if n < 2 or not math.isfinite(s):
        return (math.nan, math.nan)
    lo = s * math.sqrt((n - 1) / stats.chi2.ppf(0.5 + level / 2, n - 1))
    hi = s * math.sqrt((n - 1) / stats.chi2.ppf(0.5 - level / 2, n - 1))
    return lo, hi


def criteria(rss: float, n: int, k: int, resolution: float) -> tuple:
    """(AIC, BIC) of a least-squares fit with Gaussian residuals: n ln(RSS / n) + 2k and
    + k ln n, with RSS / n floored at resolution^2 (fits better than the read resolution
    count as exact, so that on clean data the simplest exact model wins)."""
    ll = n * math.log(max(rss / n, resolution ** 2))
    return ll + 2 * k, ll + k * math.log(n)

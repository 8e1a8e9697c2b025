"""Device arrays: the state of every device of one array, updated pulse by pulse.

A :class:`DeviceArray` draws each device's parameters once from the card's device-to-device
spreads (seeded), marks stuck-at faults, applies signed pulse counts one pulse at a time through
the card's update model (state-dependent step, cycle-to-cycle noise, clipping to the device's
own bounds) in a Numba kernel, adds write noise to the readable state, and returns conductances
in siemens with power-law drift applied for the simulated time since each device was written.

States ``w`` are in the card's normalised units on [w_min, w_max]; shapes are (rows, cols).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import fastrng
from .device_card import DeviceCard

MODEL_CODE = {"constant_step": 1, "linear_step": 2, "soft_bounds": 2, "soft_bounds_pmax": 4,
              "exp_step": 5, "pow_step": 6, "piecewise": 7}
NO_FAULT, STUCK_MIN, STUCK_MAX = 0, 1, 2
G_REF_PCM_S = 25e-6      # Nandakumar et al. 2019 normalise by G_max = 25 uS
G_REF_RERAM_S = 40e-6    # Wan et al. 2022, G_max = 40 uS


@numba.njit(cache=True, inline="always")
def _one_step(code, w, d, dw_up, dw_dn, wmin, wmax, pu, pd, gs, std, nodes_up, nodes_dn,
              cw_min, cw_max):
    """The change of state ``w`` caused by one pulse of sign ``d`` before noise and
    clipping; returns (step, scale of additive noise).  ``pu``/``pd`` are the device's own
    up/down shape parameters, ``gs`` the card-wide scalars of the model."""
    up = d > 0  # selects, not branches: pulse signs are random
    dw = dw_up if up else -dw_dn
    if code == 1:  # constant_step
        return dw, 0.0
    if code == 2:  # linear_step / soft_bounds: gamma+ = -|gu|/wmax, gamma- = -|gd|/wmin
        f = 1.0 - abs(pu if up else pd) * w / (wmax if up else wmin)
        return dw * max(f, 0.0), 0.0
    if code == 4:  # soft_bounds_pmax: pu, pd are A in pulses
        rng = wmax - wmin
        if d > 0:
            B = rng / (1.0 - math.exp(-gs[0] / pu))
            return (wmin + B - w) * (1.0 - math.exp(-1.0 / pu)), std * rng
        B = rng / (1.0 - math.exp(-gs[0] / pd))
        return -(w - (wmax - B)) * (1.0 - math.exp(-1.0 / pd)), std * rng
    if code == 5:  # exp_step: gs = (a, b, gamma_up, gamma_down); pu, pd = A_up, A_down
        z = 2.0 * gs[0] * w / (cw_max - cw_min) + gs[1]
        if d > 0:
            y = 1.0 - pu * math.exp(gs[2] * z)
            return dw_up * max(y, 0.0), 0.0
        y = 1.0 - pd * math.exp(-gs[3] * z)
        return -dw_dn * max(y, 0.0), 0.0
    if code == 6:  # pow_step: pu, pd exponents per device
        om = (wmax - w) / (wmax - wmin)
        om = min(max(om, 0.0), 1.0)
        if d > 0:
            return dw_up * om ** pu, 0.0
        return -dw_dn * (1.0 - om) ** pd, 0.0
    # piecewise: linear interpolation of node scales over the card's range
    nodes = nodes_up if d > 0 else nodes_dn
    n = nodes.size
    x = (w - cw_min) / (cw_max - cw_min) * (n - 1)
    x = min(max(x, 0.0), n - 1.0)
    i = min(int(x), n - 2)
    t = x - i
    s = nodes[i] * (1.0 - t) + nodes[i + 1] * t
    return (dw_up * s) if d > 0 else (-dw_dn * s), 0.0


@numba.njit(cache=True)
def pulse_kernel(w, n, code, dw_up, dw_dn, wmin, wmax, pu, pd, stuck, gs, std,
                 nodes_up, nodes_dn, cw_min, cw_max, seed):
    """Apply ``n[i]`` signed pulses to device i, one by one (flat arrays); returns the total
    number of pulses applied.  Multiplicative cycle-to-cycle noise ``(1 + std xi)`` except for
    soft_bounds_pmax, whose noise is additive (``std`` times the range); xi comes from the
    counter-based generator (:mod:`crossbar_ep.fastrng`), keyed by ``seed`` and the device."""
    total = 0
    for i in range(w.size):
        k = n[i]
        if k == 0 or stuck[i] != 0:
            continue
        d = 1 if k > 0 else -1
        m = abs(k)
        total += m
        wi = w[i]
        key = fastrng.key(seed + i)
        for q in range(m):
            step, add = _one_step(code, wi, d, dw_up[i], dw_dn[i], wmin[i], wmax[i], pu[i],
                                  pd[i], gs, std, nodes_up, nodes_dn, cw_min, cw_max)
            if add > 0.0:
                wi += step + add * fastrng.normal(key, q)
            elif std > 0.0:
                wi += step * (1.0 + std * fastrng.normal(key, q))
            else:
                wi += step
            if wi > wmax[i]:
                wi = wmax[i]
            elif wi < wmin[i]:
                wi = wmin[i]
        w[i] = wi
    return total


@numba.njit(cache=True)
def _count_at_bound(w, wmin, wmax, stuck, tol):
    count = 0
    for i in range(w.size):
        eps = tol * (wmax[i] - wmin[i])
        if stuck[i] != 0 or w[i] - wmin[i] <= eps or wmax[i] - w[i] <= eps:
            count += 1
    return count


def pulse_reference(card: DeviceCard, w: float, pulses: int) -> np.ndarray:
    """Trajectory of one noiseless nominal device (no spreads), in plain Python, for tests:
    the states after each of ``|pulses|`` pulses of sign(pulses)."""
    p = card.params
    d = 1 if pulses > 0 else -1
    out = []
    for _ in range(abs(pulses)):
        if card.model == "soft_bounds_pmax":
            rng = p["w_max"] - p["w_min"]
            A = (p["A_up"] if d > 0 else p["A_down"]) * p["p_max"]
            B = rng / (1 - math.exp(-p["p_max"] / A))
            step = ((p["w_min"] + B - w) if d > 0 else -(w - (p["w_max"] - B))) * (1 - math.exp(-1 / A))
        else:
            dw = p["dw_min"] * (1 + d * p["up_down"])
            if card.model == "constant_step":
                step = d * dw
            elif card.model in ("linear_step", "soft_bounds"):
                g = 1.0 if card.model == "soft_bounds" else abs(p["gamma_up" if d > 0 else "gamma_down"])
                step = d * dw * max(1 - g * w / (p["w_max"] if d > 0 else p["w_min"]), 0)
            elif card.model == "exp_step":
                z = 2 * p["a"] * w / (p["w_max"] - p["w_min"]) + p["b"]
                y = 1 - (p["A_up"] * math.exp(p["gamma_up"] * z) if d > 0
                         else p["A_down"] * math.exp(-p["gamma_down"] * z))
                step = d * dw * max(y, 0)
            elif card.model == "pow_step":
                om = (p["w_max"] - w) / (p["w_max"] - p["w_min"])
                gam = p["pow_gamma"] * (1 + d * p["pow_up_down"])
                step = dw * om ** gam if d > 0 else -dw * (1 - om) ** gam
            else:  # piecewise
                nodes = np.asarray(p["piecewise_up" if d > 0 else "piecewise_down"])
                xs = np.linspace(p["w_min"], p["w_max"], nodes.size)
                step = d * dw * float(np.interp(w, xs, nodes))
        w = min(max(w + step, p["w_min"]), p["w_max"])
        out.append(w)
    return np.array(out)


class DeviceArray:
    """The devices of one (rows, cols) array with their own drawn parameters and states."""

    def __init__(self, card: DeviceCard, shape: tuple, rng: np.random.Generator,
                 w_init: float | None = None):
        self.card, self.shape, self.rng = card, tuple(shape), rng
        n = int(np.prod(shape))
        p = card.params
        self.ideal = card.model == "ideal"
        xi = lambda: rng.standard_normal(n)  # noqa: E731
        cw_min, cw_max = card.w_min, card.w_max
        self.wmin = cw_min * (1 + p.get("w_min_dtod", 0.0) * xi()) if not self.ideal else \
            np.full(n, -np.inf)
        self.wmax = cw_max * (1 + p.get("w_max_dtod", 0.0) * xi()) if not self.ideal else \
            np.full(n, np.inf)
        if not self.ideal:  # keep a non-empty range per device
            lo = np.minimum(self.wmin, self.wmax - 1e-6 * (cw_max - cw_min))
            self.wmin, self.wmax = lo, np.maximum(self.wmax, lo + 1e-6 * (cw_max - cw_min))
        self.code = MODEL_CODE.get(card.model, 0)
        self.std = 0.0
        self.gs = np.zeros(4)
        self.nodes_up = self.nodes_dn = np.zeros(2)
        self.pu = self.pd = np.zeros(n)
        self.dw_up = self.dw_dn = np.zeros(n)
        if card.model == "soft_bounds_pmax":
            s = p["A_dtod"]
            self.pu = p["A_up"] * p["p_max"] * (1 + s * xi())
            self.pd = p["A_down"] * p["p_max"] * (1 + s * xi())
            self.gs[0] = float(p["p_max"])
            self.std = p["c2c_sigma"]
        elif not self.ideal:
            b = p["up_down"] + p["up_down_dtod"] * xi()
            spread = p["dw_min_dtod"] * xi()
            self.dw_up = np.maximum(p["dw_min"] * (1 + b + spread), 0.0)
            self.dw_dn = np.maximum(p["dw_min"] * (1 - b + spread), 0.0)
            self.std = p["dw_min_std"]
            if card.model == "linear_step":
                self.pu = p["gamma_up"] + p["gamma_up_dtod"] * xi()
                self.pd = p["gamma_down"] + p["gamma_down_dtod"] * xi()
            elif card.model == "soft_bounds":
                self.pu, self.pd = np.ones(n), np.ones(n)
            elif card.model == "exp_step":
                self.gs = np.array([p["a"], p["b"], p["gamma_up"], p["gamma_down"]])
                self.pu, self.pd = np.full(n, p["A_up"]), np.full(n, p["A_down"])
            elif card.model == "pow_step":
                g = p["pow_gamma"] * (1 + p["pow_gamma_dtod"] * xi())
                self.pu = np.maximum(g * (1 + p["pow_up_down"]), 0.0)
                self.pd = np.maximum(g * (1 - p["pow_up_down"]), 0.0)
            elif card.model == "piecewise":
                self.nodes_up = np.asarray(p["piecewise_up"], float)
                self.nodes_dn = np.asarray(p["piecewise_down"], float)
        # faults, drawn once
        self.stuck = np.zeros(n, np.int8)
        f = card.faults
        u = rng.random(n)
        a0, a1 = f.get("stuck_at_gmin_frac", 0.0), f.get("stuck_at_gmax_frac", 0.0)
        self.stuck[u < a0] = STUCK_MIN
        self.stuck[(u >= a0) & (u < a0 + a1)] = STUCK_MAX
        # drift: one xi per device; nu from the card or the PCM law at read time
        self.nu_xi = rng.standard_normal(n) if card.drift else None
        self.t_written = np.zeros(n)
        self.t_now = 0.0
        self.w = np.zeros(n) if w_init is None else np.full(n, float(w_init))
        if not self.ideal:
            np.clip(self.w, self.wmin, self.wmax, out=self.w)
        self.write_noise = np.zeros(n)

    # ------------------------------------------------------------------ updates
    def pulse(self, n_pulses: np.ndarray) -> int:
        """Apply signed pulse counts (shape of the array; + SET/potentiation, - RESET);
        returns the number of pulses applied (stuck devices receive none)."""
        if self.ideal:
            raise TypeError("the ideal device takes exact updates (update_exact), not pulses")
        n = np.ascontiguousarray(n_pulses, dtype=np.int64).reshape(-1)
        total = pulse_kernel(self.w, n, self.code, self.dw_up, self.dw_dn, self.wmin,
                             self.wmax, self.pu, self.pd, self.stuck, self.gs, self.std,
                             self.nodes_up, self.nodes_dn, self.card.w_min, self.card.w_max,
                             int(self.rng.integers(0, 2**62)))
        if self.card.drift:
            self.t_written[n != 0] = self.t_now
        self._redraw_write_noise()
        return int(total)

    def update_exact(self, dw: np.ndarray) -> None:
        """The ideal device: add an exact float change (no bounds, noise or pulses)."""
        self.w += np.asarray(dw, float).reshape(-1)

    def _redraw_write_noise(self) -> None:
        s = self.card.params.get("write_noise_std", 0.0)
        if s:
            self.write_noise = s * self.card.params["dw_min"] * \
                self.rng.standard_normal(self.w.size)

    def program(self, w_target: np.ndarray) -> None:
        """Write target states directly (initial programming): programming noise of the card,
        then clipping to each device's bounds."""
        w = np.asarray(w_target, float).reshape(-1).copy()
        pn = self.card.programming_noise
        model = pn.get("model", "none")
        if model != "none":
            g = self.card.w_to_g(w)
            span_w = self.card.w_max - self.card.w_min
            span_g = self.card.g_max_S - self.card.g_min_S
            if model == "constant":
                sigma_S = np.full_like(w, pn["std_S"])
            elif model == "pcm_nandakumar":
                x = g / G_REF_PCM_S
                sigma_S = np.maximum(0.26348 + 1.9650 * x - 1.1731 * x ** 2, 0.0) * 1e-6
            else:  # reram_wan
                x = g / G_REF_RERAM_S
                sigma_S = np.maximum(0.348 + 16.030 * x - 43.853 * x ** 2 + 45.393 * x ** 3
                                     - 16.815 * x ** 4, 0.0) * 1e-6
            w += sigma_S / span_g * span_w * self.rng.standard_normal(w.size)
        if not self.ideal:
            np.clip(w, self.wmin, self.wmax, out=w)
        self.w = w
        self.t_written[:] = self.t_now
        self._redraw_write_noise()

    def advance(self, seconds: float) -> None:
        """Let simulated time pass (drift acts on reads)."""
        self.t_now += float(seconds)

    # ------------------------------------------------------------------ reads
    def states(self) -> np.ndarray:
        """Readable states (rows, cols): hidden state + write noise; stuck devices at bounds."""
        w = self.w + self.write_noise if self.card.params.get("write_noise_std") else self.w
        if not self.ideal and self.stuck.any():
            w = np.where(self.stuck == STUCK_MIN, self.wmin, w)
            w = np.where(self.stuck == STUCK_MAX, self.wmax, w)
        return w.reshape(self.shape)

    def conductance(self) -> np.ndarray:
        """Conductances (S), shape (rows, cols), with drift for the time since each write."""
        g = self.card.w_to_g(self.states().reshape(-1))
        g = np.maximum(g, 0.0) if not self.ideal else g
        if self.card.drift:
            g = g * self._drift_factor(g)
        return g.reshape(self.shape)

    def _drift_factor(self, g: np.ndarray) -> np.ndarray:
        d = self.card.drift
        t0 = d.get("t0_s", 20.0)
        if d.get("nu_model") == "pcm_nandakumar":
            x = np.maximum(g / G_REF_PCM_S, 1e-12)
            mu = np.clip(-0.0155 * np.log(x) + 0.0244, 0.049, 0.1)
            sd = np.clip(-0.0125 * np.log(x) - 0.0059, 0.008, 0.045)
        else:
            mu, sd = d.get("nu_mean", 0.0), d.get("nu_std", 0.0)
        nu = np.abs(mu + sd * self.nu_xi)
        dt = self.t_now - self.t_written
        return ((dt + t0) / t0) ** (-nu)

    def at_bound_fraction(self, tol: float = 1e-9) -> float:
        """Fraction of devices at (or within ``tol`` of their range from) one of their bounds,
        stuck devices included."""
        if self.ideal:
            return 0.0
        return _count_at_bound(self.w, self.wmin, self.wmax, self.stuck, tol) / self.w.size

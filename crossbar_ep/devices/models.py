"""The shipped device models, registered in the order cards and docs list them.

Per-device columns of ``p`` (see :mod:`crossbar_ep.devices.base`): step models start with
dw_up, dw_dn (in w units); ``c`` holds the card-wide constants listed in each ``constants``.
"""

from __future__ import annotations

import math

import numpy as np

from crossbar_ep.devices.base import SPREAD, STEP_PARAMS, W_RANGE, DeviceModel, StepModel, \
    asymmetric
from crossbar_ep.devices.registry import REQUIRED, Param, register


@register
class Ideal(DeviceModel):
    name = "ideal"
    summary = "exact float updates, no bounds, noise or pulses"
    params = {}
    pulsed = False

    @classmethod
    def n_states(cls, p):
        return math.inf

    @classmethod
    def mean_step(cls, p):
        return 0.0

    @classmethod
    def draw_bounds(cls, card, xi, n):
        return np.full(n, -np.inf), np.full(n, np.inf)


@register
class ConstantStep(StepModel):
    name = "constant_step"
    summary = "`d dw^d`"

    @staticmethod
    def step(w, d, wmin, wmax, p, c):
        return (p[0] if d > 0 else -p[1]), 0.0


@register
class LinearStep(StepModel):
    """Columns: dw_up, dw_dn, gamma_up, gamma_down (per device); constants: nominal bounds
    flag (1: the slope uses the card's w_min / w_max, ``conventions.slope_bound: nominal``),
    the card's w_min, w_max."""

    name = "linear_step"
    summary = ("`d dw^d (1 - abs(gamma_d) w / w_bound_d)`: `w_bound` = w_max up, w_min down "
               "(each device's drawn bound, or the card's with `conventions.slope_bound: "
               "nominal`)")
    params = {**STEP_PARAMS,
              "gamma_up": Param(0.0, "-", "slope of the up step: step scales by "
                                "(1 - |gamma_up| w / w_max)", "any", -10.0, 10.0, start=0.1),
              "gamma_down": Param(0.0, "-", "slope of the down step: step scales by "
                                  "(1 - |gamma_down| w / w_min)", "any", -10.0, 10.0,
                                  start=0.1),
              "gamma_up_dtod": Param(0.0, "-", "device-to-device std of gamma_up", "nonneg",
                                     0.0, 10.0, spread_of=("gamma_up",)),
              "gamma_down_dtod": Param(0.0, "-", "device-to-device std of gamma_down",
                                       "nonneg", 0.0, 10.0, spread_of=("gamma_down",))}

    @classmethod
    def draw_shape(cls, card, xi, n):
        p = card.params      # the step uses |gamma|: stored so, one value per device slope
        return {"gamma_up": np.abs(p["gamma_up"] + p["gamma_up_dtod"] * xi()),
                "gamma_dn": np.abs(p["gamma_down"] + p["gamma_down_dtod"] * xi())}

    @classmethod
    def constants(cls, card):
        return np.array([card.convention("slope_bound") == "nominal", card.w_min, card.w_max],
                        float)

    @staticmethod
    def step(w, d, wmin, wmax, p, c):
        if c[0] > 0:
            wmin, wmax = c[1], c[2]
        if d > 0:
            return p[0] * max(1.0 - abs(p[2]) * w / wmax, 0.0), 0.0
        return -p[1] * max(1.0 - abs(p[3]) * w / wmin, 0.0), 0.0


@register
class SoftBounds(LinearStep):
    name = "soft_bounds"
    summary = "linear_step with gamma = 1 (step vanishes at each bound)"
    params = dict(STEP_PARAMS)

    @classmethod
    def draw_shape(cls, card, xi, n):
        return {"gamma_up": np.ones(n), "gamma_dn": np.ones(n)}


@register
class SoftBoundsPmax(DeviceModel):
    """NeuroSim's exponential curve; columns: A_up, A_down in pulses (per device);
    constants: p_max, c2c_sigma."""

    name = "soft_bounds_pmax"
    summary = ("`w(p) = B (1 - exp(-p / A)) + w_min`, `B = (w_max - w_min) / (1 - exp(-p_max / "
               "A))`, A = A_d p_max; depression mirrored from w_max; additive noise "
               "`c2c_sigma (w_max - w_min) xi`")
    states_key = "p_max"
    params = {
        "p_max": Param(REQUIRED, "pulses", "pulses that sweep the full range (the number of "
                       "states)", "posint", 1, 1e6, start="states"),
        "A_up": Param(REQUIRED, "p_max", "nonlinearity of potentiation, in units of p_max "
                      "(sign sets the curvature)", "nonzero", -1000.0, 1000.0,
                      start=(0.5, -0.5)),
        "A_down": Param(REQUIRED, "p_max", "nonlinearity of depression, in units of p_max",
                        "nonzero", -1000.0, 1000.0, start=(0.5, -0.5)),
        "w_min": Param(-1.0, "w", "lower bound of the device state", "any", *W_RANGE,
                       start=-1.0),
        "w_max": Param(1.0, "w", "upper bound of the device state", "any", *W_RANGE,
                       start=1.0),
        "A_dtod": Param(0.0, "-", "device-to-device relative std of A_up and A_down", "nonneg",
                        *SPREAD, spread_of=("A_up", "A_down"), relative=True),
        "w_max_dtod": Param(0.0, "-", "device-to-device relative std of w_max", "nonneg",
                            *SPREAD, spread_of=("w_max",), relative=True),
        "w_min_dtod": Param(0.0, "-", "device-to-device relative std of w_min", "nonneg",
                            *SPREAD, spread_of=("w_min",), relative=True),
        "c2c_sigma": Param(0.0, "w_max - w_min", "cycle-to-cycle std per pulse, absolute, as "
                           "a fraction of the range (NeuroSim convention)", "nonneg", 0.0, 1.0,
                           noise="c2c"),
    }

    @classmethod
    def n_states(cls, p):
        return float(p["p_max"])

    @classmethod
    def mean_step(cls, p):
        return (p["w_max"] - p["w_min"]) / p["p_max"]

    @classmethod
    def draw(cls, card, xi, n):
        p = card.params
        s = p["A_dtod"]
        return {"A_up": p["A_up"] * p["p_max"] * (1 + s * xi()),
                "A_dn": p["A_down"] * p["p_max"] * (1 + s * xi())}

    @classmethod
    def constants(cls, card):
        return np.array([float(card.params["p_max"]), card.params["c2c_sigma"]])

    @classmethod
    def c2c_std(cls, card):
        return float(card.params["c2c_sigma"])

    @staticmethod
    def step(w, d, wmin, wmax, p, c):
        rng = wmax - wmin
        if d > 0:
            B = rng / (1.0 - math.exp(-c[0] / p[0]))
            return (wmin + B - w) * (1.0 - math.exp(-1.0 / p[0])), c[1] * rng
        B = rng / (1.0 - math.exp(-c[0] / p[1]))
        return -(w - (wmax - B)) * (1.0 - math.exp(-1.0 / p[1])), c[1] * rng


@register
class ExpStep(StepModel):
    """Constants: a, b, gamma_up, gamma_down, A_up, A_down, w_min, w_max of the card, and a
    flag (1: z uses each device's own range, ``conventions.exp_range: device``)."""

    name = "exp_step"
    summary = ("`z = 2 a w / (w_max - w_min) + b` (the card's range, or each device's with "
               "`conventions.exp_range: device`), `y = 1 - A_d exp(d gamma_d z)`, step "
               "`d max(y, 0) dw^d`")
    params = {**STEP_PARAMS,
              "a": Param(-0.5, "-", "z = 2 a w / (w_max - w_min) + b", "any", -10.0, 10.0),
              "b": Param(-0.5, "-", "offset of z", "any", -10.0, 10.0),
              "gamma_up": Param(5.0, "-", "exponent of the up step", "any", -20.0, 20.0,
                                start=3.0),
              "gamma_down": Param(5.0, "-", "exponent of the down step", "any", -20.0, 20.0,
                                  start=3.0),
              "A_up": Param(REQUIRED, "-", "y = 1 - A_up exp(gamma_up z) for up pulses", "any",
                            -1000.0, 1000.0, start=(-0.5, 0.1)),
              "A_down": Param(REQUIRED, "-", "y = 1 - A_down exp(-gamma_down z) for down "
                              "pulses", "any", -1000.0, 1000.0, start=(-0.5, 0.1))}

    @classmethod
    def constants(cls, card):
        p = card.params
        return np.array([p["a"], p["b"], p["gamma_up"], p["gamma_down"], p["A_up"],
                         p["A_down"], card.w_min, card.w_max,
                         card.convention("exp_range") == "device"], float)

    @staticmethod
    def step(w, d, wmin, wmax, p, c):
        span = (wmax - wmin) if c[8] > 0 else (c[7] - c[6])
        z = 2.0 * c[0] * w / span + c[1]
        if d > 0:
            y = 1.0 - c[4] * math.exp(c[2] * z)
            return p[0] * max(y, 0.0), 0.0
        y = 1.0 - c[5] * math.exp(-c[3] * z)
        return -p[1] * max(y, 0.0), 0.0


@register
class PowStep(StepModel):
    """Columns: dw_up, dw_dn, gamma_up, gamma_down (exponents, per device)."""

    name = "pow_step"
    summary = ("`omega = (w_max - w) / (w_max - w_min)`; up `dw^+ omega^gamma+`, down "
               "`dw^- (1 - omega)^gamma-`, `gamma^d = pow_gamma (1 + d pow_up_down)` (with "
               "`conventions.up_down: larger_is_dw_min` the larger exponent stays pow_gamma)")
    params = {**STEP_PARAMS,
              "pow_gamma": Param(1.0, "-", "exponent of the power-law step", "pos", 0.0, 20.0,
                                 start=1.0),
              "pow_up_down": Param(0.0, "-", "asymmetry of the exponent", "any", -1.0, 1.0,
                                   start=0.0),
              "pow_gamma_dtod": Param(0.0, "-", "device-to-device relative std of the "
                                      "exponent", "nonneg", *SPREAD, spread_of=("pow_gamma",),
                                      relative=True)}

    @classmethod
    def draw_shape(cls, card, xi, n):
        p = card.params
        g = p["pow_gamma"] * (1 + p["pow_gamma_dtod"] * xi())
        up, dn = asymmetric(p["pow_up_down"], card.convention("up_down"))
        return {"gamma_up": np.maximum(g * up, 0.0), "gamma_dn": np.maximum(g * dn, 0.0)}

    @staticmethod
    def step(w, d, wmin, wmax, p, c):
        om = (wmax - w) / (wmax - wmin)
        om = min(max(om, 0.0), 1.0)
        if d > 0:
            return p[0] * om ** p[2], 0.0
        return -p[1] * (1.0 - om) ** p[3], 0.0


@register
class Piecewise(StepModel):
    """Constants: w_min, w_max of the card, the number of up nodes, the up nodes, the down
    nodes."""

    name = "piecewise"
    summary = ("`d dw^d s(w)`, s linearly interpolated from nodes spread evenly over "
               "[w_min, w_max]")
    params = {**STEP_PARAMS,
              # the nodes and dw_min are one product, and the nodes carry the asymmetry: the
              # fit holds dw_min while it fits the nodes, and up_down at its value
              "dw_min": STEP_PARAMS["dw_min"]._replace(anchor=True),
              "up_down": STEP_PARAMS["up_down"]._replace(start=None),
              "piecewise_up": Param(REQUIRED, "-", "step scale at nodes spread evenly over "
                                    "[w_min, w_max] for up pulses", "list", 0.0, 100.0,
                                    start=[1.0] * 5),
              "piecewise_down": Param(REQUIRED, "-", "the same for down pulses", "list", 0.0,
                                      100.0, start=[1.0] * 5)}

    @classmethod
    def constants(cls, card):
        up, dn = card.params["piecewise_up"], card.params["piecewise_down"]
        return np.array([card.w_min, card.w_max, len(up), *up, *dn], float)

    @staticmethod
    def step(w, d, wmin, wmax, p, c):
        nu = int(c[2])
        if d > 0:
            off, n = 3, nu
        else:
            off, n = 3 + nu, c.size - 3 - nu
        x = (w - c[0]) / (c[1] - c[0]) * (n - 1)
        x = min(max(x, 0.0), n - 1.0)
        i = min(int(x), n - 2)
        t = x - i
        s = c[off + i] * (1.0 - t) + c[off + i + 1] * t
        return (p[0] * s) if d > 0 else (-p[1] * s), 0.0

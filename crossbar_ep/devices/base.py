"""Base classes of the device models.

A model class holds everything model-specific:

- ``params``: the card parameters, name -> :class:`~crossbar_ep.devices.registry.Param`;
- ``draw(card, xi, n)``: each device's own parameters, drawn once from the card's
  device-to-device spreads (``xi()`` returns n standard normals), as named arrays of shape (n,);
  their order is the column order of the per-device matrix the step sees;
- ``constants(card)``: card-wide numbers the step needs (1-D float array);
- ``step(w, d, wmin, wmax, p, c)``: the state change of one pulse of sign d (+1 SET, -1 RESET)
  at state w for a device with bounds wmin, wmax, own parameters ``p`` (one row, shape (k,))
  and constants ``c``; returns (step, std of additive noise).  A plain Python function over
  scalars and 1-D arrays: the Numba pulse kernel calls it compiled
  (:func:`crossbar_ep.devices.kernel.jit_step`), :func:`~crossbar_ep.devices.pulse_reference`
  runs the same function un-jitted.

The pulse kernel adds the cycle-to-cycle noise (multiplicative ``(1 + c2c_std xi)`` unless the
step returns an additive std) and clips to the device's bounds.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.devices.registry import REQUIRED, Param


class DeviceModel:
    """A device model; subclass, set ``name``, ``params``, ``summary`` and register it."""

    name: str = ""
    summary: str = ""          # state change per pulse, one line for docs/devices.md
    params: dict = {}
    pulsed = True              # False: exact float updates (no pulses, bounds or noise)
    states_key = "dw_min"      # the parameter that sets the number of states (card errors)
    bound_params = ("w_min", "w_max")   # the card's nominal device bounds (each device draws
                                        # its own, draw_bounds); the fit fits them per device

    @classmethod
    def n_states(cls, p: dict) -> float:
        """Distinguishable states: (w_max - w_min) / dw_min."""
        return (p["w_max"] - p["w_min"]) / p["dw_min"]

    @classmethod
    def mean_step(cls, p: dict) -> float:
        """Mean state change of one pulse (w units): dw_min; pulse rules size updates by it."""
        return p["dw_min"]

    @classmethod
    def draw_bounds(cls, card, xi, n: int) -> tuple:
        """Each device's own (w_min, w_max), shape (n,): relative spreads w_min_dtod,
        w_max_dtod (w_min drawn first), then a non-empty range kept per device."""
        p = card.params
        cw_min, cw_max = card.w_min, card.w_max
        wmin = cw_min * (1 + p.get("w_min_dtod", 0.0) * xi())
        wmax = cw_max * (1 + p.get("w_max_dtod", 0.0) * xi())
        lo = np.minimum(wmin, wmax - 1e-6 * (cw_max - cw_min))
        return lo, np.maximum(wmax, lo + 1e-6 * (cw_max - cw_min))

    @classmethod
    def draw(cls, card, xi, n: int) -> dict:
        """Per-device parameters, name -> array (n,), in the step's column order."""
        return {}

    @classmethod
    def constants(cls, card) -> np.ndarray:
        """Card-wide numbers the step reads (1-D float64)."""
        return np.zeros(0)

    @classmethod
    def c2c_std(cls, card) -> float:
        """Relative cycle-to-cycle std of each pulse's step (multiplicative noise)."""
        return float(card.params.get("dw_min_std", 0.0))

    @staticmethod
    def step(w, d, wmin, wmax, p, c):
        raise NotImplementedError


W_RANGE = (-1000.0, 1000.0)    # normalised state units: published fits use about +-1
SPREAD = (0.0, 2.0)            # relative device-to-device std: 2 already leaves a third of
                               # the devices at a zero step or an empty range

STEP_PARAMS = {
    "dw_min": Param(REQUIRED, "w", "mean step of one pulse (the state granularity)", "pos",
                    0.0, 1000.0, start="step"),
    "w_min": Param(REQUIRED, "w", "lower bound of the device state", "any", *W_RANGE,
                   start=-1.0),
    "w_max": Param(REQUIRED, "w", "upper bound of the device state", "any", *W_RANGE,
                   start=1.0),
    "up_down": Param(0.0, "-", "up/down asymmetry b: up steps scale by (1 + b), down by (1 - b); "
                     "with conventions.up_down larger_is_dw_min the larger step stays dw_min "
                     "and the other scales by (1 - abs(b))", "any", -1.0, 1.0, start=0.0),
    "dw_min_dtod": Param(0.0, "-", "device-to-device spread (relative std) of dw_min", "nonneg",
                         *SPREAD, spread_of=("dw_min",), relative=True),
    "up_down_dtod": Param(0.0, "-", "device-to-device std of up_down", "nonneg", 0.0, 1.0,
                          spread_of=("up_down",)),
    "w_max_dtod": Param(0.0, "-", "device-to-device relative std of w_max", "nonneg", *SPREAD,
                        spread_of=("w_max",), relative=True),
    "w_min_dtod": Param(0.0, "-", "device-to-device relative std of w_min", "nonneg", *SPREAD,
                        spread_of=("w_min",), relative=True),
    "dw_min_std": Param(0.0, "-", "cycle-to-cycle relative std of each pulse's step", "nonneg",
                        0.0, 20.0, noise="c2c"),
    "write_noise_std": Param(0.0, "dw_min", "std of the write noise on the readable state, in "
                             "units of dw_min, redrawn at every update that fires a pulse",
                             "nonneg", 0.0, 1e4, noise="write"),
}


def asymmetric(b, convention: str) -> tuple:
    """(up, down) factors of an up/down asymmetry b (arrays or floats): ``symmetric``
    ``(1 + b, 1 - b)``; ``larger_is_dw_min`` (the convention of the published fits): the larger
    of the two stays 1 and only the other shrinks by |b|, ``(1 + min(b, 0), 1 - max(b, 0))``."""
    if convention == "larger_is_dw_min":
        return 1 + np.minimum(b, 0.0), 1 - np.maximum(b, 0.0)
    return 1 + b, 1 - b


class StepModel(DeviceModel):
    """Models with a mean step dw_min and up/down asymmetry: each device draws
    ``dw_up = dw_min (a_up + dw_min_dtod xi)``, ``dw_down = dw_min (a_down + dw_min_dtod xi)``
    with ``(a_up, a_down) = asymmetric(b)`` for ``b = up_down + up_down_dtod xi'`` under the
    card's ``conventions.up_down`` (columns 0 and 1 of ``p``), then :meth:`draw_shape`'s
    columns."""

    params = STEP_PARAMS

    @classmethod
    def draw(cls, card, xi, n):
        p = card.params
        b = p["up_down"] + p["up_down_dtod"] * xi()
        spread = p["dw_min_dtod"] * xi()
        up, dn = asymmetric(b, card.convention("up_down"))
        return {"dw_up": np.maximum(p["dw_min"] * (up + spread), 0.0),
                "dw_dn": np.maximum(p["dw_min"] * (dn + spread), 0.0),
                **cls.draw_shape(card, xi, n)}

    @classmethod
    def draw_shape(cls, card, xi, n: int) -> dict:
        """Model-specific per-device columns after dw_up, dw_dn."""
        return {}

"""Device models and device arrays.

- :mod:`.registry`: model name -> model class (``@register``), parameter specs (:class:`Param`);
- :mod:`.base`: the model base classes (parameter spec, per-device draw, pulse step);
- :mod:`.models`: the shipped models (ideal, constant_step, linear_step, soft_bounds,
  soft_bounds_pmax, exp_step, pow_step, piecewise);
- :mod:`.kernel`: the Numba pulse kernel, generic over the model's compiled step;
- :mod:`.array`: :class:`DeviceArray` (states, faults, drift, clock) and
  :func:`pulse_reference`.

Adding a model is one class here (or anywhere imported before the card is loaded) registered
with ``@register``, plus a card with ``model: <its name>``.  Importing this package does not
import Numba (the kernel loads on the first pulse).
"""

from crossbar_ep.devices import models  # noqa: F401  (registers the shipped models, in this order)
from crossbar_ep.devices.array import G_REF_PCM_S, G_REF_RERAM_S, NO_FAULT, STUCK_MAX, STUCK_MIN, DeviceArray, \
    pulse_reference
from crossbar_ep.devices.base import DeviceModel, StepModel
from crossbar_ep.devices.registry import REQUIRED, Param, model_class, model_names, register

__all__ = ["DeviceArray", "pulse_reference", "DeviceModel", "StepModel", "Param", "REQUIRED",
           "register", "model_class", "model_names", "NO_FAULT", "STUCK_MIN", "STUCK_MAX",
           "G_REF_PCM_S", "G_REF_RERAM_S"]


def __getattr__(name):
    if name == "pulse_kernel":           # the Numba kernel, imported on demand
        from crossbar_ep.devices.kernel import pulse_kernel
        return pulse_kernel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

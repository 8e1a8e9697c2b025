"""The device-model registry: model name -> model class.

A model class (:class:`~crossbar_ep.devices.base.DeviceModel`) is registered with
``@register`` under its ``name``; device cards (``model: <name>``), the card validation, the
generated ``docs/devices.md`` and :class:`~crossbar_ep.devices.DeviceArray` all look it up
here, so adding a model is one new class plus a card.
"""

from __future__ import annotations

import math
from typing import NamedTuple

REQUIRED = object()   # default of a parameter a card must give


class Param(NamedTuple):
    """One card parameter of a model: default (or REQUIRED), unit, meaning, kind, physical
    range, and how ``crossbar-ep device fit`` treats it.

    kind: 'any' real, 'nonneg', 'pos', 'posint', 'nonzero' (|v| >= 1e-3) or 'list' (of >= 2
    numbers).  ``lo``, ``hi``: the physical range, inclusive, checked when a card loads (for a
    list, of every element).

    The fit (:mod:`crossbar_ep.devices.fit`) reads the rest; a model whose parameters carry
    them is fittable with no other code:

    - ``start``: the start guess of a parameter fitted per device: a number, a tuple of
      candidate numbers (each is tried; for a sign the data must decide), a list (a 'list'
      parameter: one start per node, the length sets the node count), or 'step' (the data's
      median step per pulse, w units) or 'states' (the w range over that step).  None: the
      fit holds the parameter at its value (the default or the user's).
    - ``anchor``: held at its start while the parameters without a spread are fitted (it sets
      their scale: piecewise's dw_min and the node values are one product), then fitted per
      device.
    - ``spread_of``: this parameter is the device-to-device spread (std) of the named ones;
      ``relative``: in units of their nominal value.
    - ``noise``: 'c2c' (the model's cycle-to-cycle noise, estimated from one-pulse residuals)
      or 'write' (noise on each read, redrawn per pulse, in the parameter's unit).
    """

    default: object
    unit: str
    doc: str
    kind: str
    lo: float = -math.inf
    hi: float = math.inf
    start: object = None
    anchor: bool = False
    spread_of: tuple = ()
    relative: bool = False
    noise: str = ""

    @property
    def range_text(self) -> str:
        """The physical range as the docs and error messages show it."""
        if self.kind == "nonzero":
            return f"{self.lo:g} to {self.hi:g}, abs >= 0.001"
        return f"{self.lo:g} to {self.hi:g}"


_MODELS: dict = {}


def register(cls):
    """Class decorator: add a device model under ``cls.name`` (replacing one of that name)."""
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise TypeError(f"{cls.__name__}: a device model needs a class attribute 'name'")
    _MODELS[cls.name] = cls
    return cls


def model_names() -> tuple:
    """Registered model names, in registration order."""
    return tuple(_MODELS)


def model_class(name: str):
    """The model class registered as ``name`` (KeyError names the known models)."""
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown device model {name!r}; registered: "
                       f"{', '.join(_MODELS)}") from None

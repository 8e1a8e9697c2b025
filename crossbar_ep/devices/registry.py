"""The device-model registry: model name -> model class.

A model class (:class:`~crossbar_ep.devices.base.DeviceModel`) is registered with
``@register`` under its ``name``; device cards (``model: <name>``), the card validation, the
generated ``docs/devices.md`` and :class:`~crossbar_ep.devices.DeviceArray` all look it up
here, so adding a model is one new class plus a card.
"""

from __future__ import annotations

from typing import NamedTuple

REQUIRED = object()   # default of a parameter a card must give


class Param(NamedTuple):
    """One card parameter of a model: default (or REQUIRED), unit, meaning, kind.

    kind: 'any' real, 'nonneg', 'pos', 'posint', 'nonzero' or 'list' (of >= 2 numbers)."""

    default: object
    unit: str
    doc: str
    kind: str


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

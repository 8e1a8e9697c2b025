"""The pulse rules by scheme name (``crossbar.update.scheme``).  A new rule is one class
(subclass :class:`~crossbar_ep.crossbar.pulses.DeterministicPulses`, name its ``schemes``,
read its parameters from the settings) added here and its scheme to
:data:`crossbar_ep.crossbar.update_settings.SCHEMES`."""

from __future__ import annotations

import numpy as np

from crossbar_ep.crossbar.mixed_precision import MixedPrecision
from crossbar_ep.crossbar.pulses import DeterministicPulses, StochasticCoincidence
from crossbar_ep.crossbar.tiki_taka import TikiTaka
from crossbar_ep.crossbar.update_settings import UpdateSettings

RULES = {scheme: cls for cls in (DeterministicPulses, StochasticCoincidence, MixedPrecision,
                                 TikiTaka) for scheme in cls.schemes}


def make_rule(settings: UpdateSettings, rng: np.random.Generator) -> DeterministicPulses:
    """The pulse rule ``settings.scheme`` names, reading ``settings``."""
    return RULES[settings.scheme](settings, rng)

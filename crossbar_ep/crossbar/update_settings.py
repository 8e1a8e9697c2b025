"""Settings of the in-situ update (the ``crossbar.update`` config section): which pulse rule,
its pulse gain and caps, and the parameters of the stochastic, mixed-precision and Tiki-Taka
rules.  One declaration, with units and docs; the rules in :mod:`crossbar_ep.crossbar.rules`
read it directly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crossbar_ep.schema import (MAX_GAIN, MAX_STEPS, key, p_bool, p_choice, p_float, p_int,
                                p_optional, p_scalar_or_list)

SCHEMES = ("deterministic", "stochastic", "mixed_precision", "tiki_taka", "chopped_tiki_taka")


@dataclass(frozen=True)
class UpdateSettings:
    """The pulse rule's settings; also the ``crossbar.update`` config section.  Every rule
    class (:mod:`crossbar_ep.crossbar.rules`) reads its parameters from one of these."""

    scheme: str = key("deterministic", "deterministic (pulse counts with stochastic rounding "
                      "and a cap), stochastic (pulse coincidence of bit streams of length bl), "
                      "mixed_precision (digital accumulator per device, Nandakumar 2020), "
                      "tiki_taka (TTv2, Gokmen 2021) or chopped_tiki_taka (c-TTv2, Rasch 2023); "
                      "docs/crossbar.md.",
                      p_choice(*SCHEMES))
    lr: Any = key(None, "Pulse gain (the hardware learning rate), one value or one per weight "
                  "matrix like training.lr; null uses training.lr.",
                  p_optional(p_scalar_or_list(p_float(lo=0.0, hi=MAX_GAIN))))
    normalise: bool | None = key(None, "Divide the arrays' updates by the path gain of "
                                 "their layer (training.update_norm) so deep layers still learn; null follows "
                                 "training.update_norm (true/false override it for the "
                                 "crossbar arrays only).", p_optional(p_bool()))
    max_pulses: int | None = key(31, "Deterministic scheme: cap on pulses per device per "
                                 "update; null for no cap.", p_optional(p_int(lo=1, hi=MAX_STEPS)),
                                 "pulses")
    momentum: float = key(0.0, "Mixed precision: momentum of the digital update, "
                          "v = momentum v + lr delta, and the accumulator integrates v (SGD "
                          "momentum computed in the digital unit; one more word per device); 0 "
                          "integrates lr delta itself (Nandakumar 2020).",
                          p_float(lo=0.0, hi=1.0, hi_open=True))
    threshold: float = key(1.0, "Mixed precision: the accumulator fires only when it holds at "
                           "least this many device steps (then all its whole steps, the "
                           "remainder kept); 1 is Nandakumar 2020.  Above 1 it is a dead "
                           "zone: an update whose sign keeps changing (mini-batch and read "
                           "noise) fires fewer pulses, while a steady update fires as many "
                           "in bursts, so asymmetric devices see fewer up/down pulse pairs "
                           "(each pair drags a device toward its symmetry point).",
                           p_float(lo=1.0, hi=1.0e4), "device steps")
    bl: int = key(31, "Stochastic scheme: bit-stream length per sample.",
                  p_int(lo=1, hi=10_000), "slots")
    update_management: bool = key(True, "Stochastic scheme: balance the row and column "
                                  "probabilities by sqrt(max|delta| / max|x|).", p_bool())
    transfer_every: int = key(1, "Tiki-Taka: updates between read-outs of the fast array.",
                              p_int(lo=1, hi=MAX_STEPS), "updates")
    transfer_columns: int | None = key(None, "Tiki-Taka: fast-array columns (input lines) "
                                       "read out per transfer, in turn; null: one per sample "
                                       "of the batch (training.batch_size), the papers' rate "
                                       "of one column per single-sample update (one column "
                                       "per mini-batch leaves a 784-input layer's columns "
                                       "unread for epochs; docs/crossbar.md).",
                                       p_optional(p_int(lo=1, hi=MAX_STEPS)), "columns")
    transfer_lr: float = key(1.0, "Tiki-Taka: gain from the fast array's read-out into the "
                             "digital buffer.", p_float(lo=0.0, hi=MAX_GAIN, lo_open=True))
    transfer_max_pulses: int = key(1, "Tiki-Taka: cap on pulses per slow device per transfer.",
                                   p_int(lo=1, hi=MAX_STEPS), "pulses")
    chop_prob: float = key(0.1, "Chopped Tiki-Taka: probability that a column's chopper sign "
                           "flips after its read-out.", p_float(lo=0.0, hi=1.0))
    buffer_forget: bool = key(True, "Tiki-Taka: after a transfer, reset the buffer entries "
                              "that fired to buffer_momentum x their value (the papers' rule; "
                              "what the pulse cap clipped is lost); false subtracts "
                              "(1 - buffer_momentum) x the pulses' change and keeps the rest.",
                              p_bool())
    buffer_momentum: float | None = key(None, "Tiki-Taka: fraction of a fired buffer entry "
                                        "kept after its transfer; null: 0.1 for tiki_taka "
                                        "(Gokmen 2021), 0 for chopped_tiki_taka (Rasch 2023).",
                                        p_optional(p_float(lo=0.0, hi=1.0)))

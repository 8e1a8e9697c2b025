"""Device cards: YAML files in ``device_models/`` describing one resistive device type.

A card names the update model, the conductance range in siemens, the model's parameters in
normalised weight units (aihwkit's names, so published fits port one to one), optional faults,
drift and programming noise, and a ``source`` citation.  :func:`load_card` validates it and
names the file and key in every error; ``docs/devices.md`` lists every parameter with its unit
(generated from the model registry, :mod:`crossbar_ep.devices`, by
``python -m crossbar_ep.config.docs``).
"""

from __future__ import annotations

import difflib
import math
import os
import reprlib
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import yaml

from crossbar_ep import shipped, yamlio
from crossbar_ep.devices.laws import section_keys, validate_section
from crossbar_ep.devices.registry import REQUIRED, model_class, model_names
from crossbar_ep.errors import ConfigError
from crossbar_ep.schema import Where

MAX_STATES = 1e6           # above this, use model: ideal (pulse trains would run for ever)
MAX_CARD_BYTES = 1 << 20   # a card is a few lines; larger files are refused unread
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlevel = 2



def __getattr__(name):
    """``MODELS`` (registered model names) and ``PARAMS`` (model -> parameter spec), read live
    from the model registry (:mod:`crossbar_ep.devices`)."""
    if name == "MODELS":
        return model_names()
    if name == "PARAMS":
        return {m: model_class(m).params for m in model_names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


TOP = {
    "name": "device name",
    "model": "update model: one of the models below (the model registry, "
             "crossbar_ep/devices/)",
    "source": "citation of the published parameters (required)",
    "g_min_S": "lowest conductance (S); or give r_on_ohm and on_off_ratio",
    "g_max_S": "highest conductance (S)",
    "r_on_ohm": "on-state resistance (ohm): g_max_S = 1 / r_on_ohm",
    "on_off_ratio": "R_off / R_on: g_min_S = g_max_S / on_off_ratio",
    "description": "free text",
    "write_voltage_V": "programming pulse amplitude (V), for the programming energy "
                       "V^2 G t_pulse per pulse; default 1 V (generic, not from the source)",
    "pulse_width_s": "programming pulse width (s); default 100 ns (generic)",
    "params": "model parameters (normalised state units w unless noted)",
    "faults": "stuck-at faults: stuck_at_gmin_frac, stuck_at_gmax_frac (fractions of devices)",
    "drift": "power-law drift: law power (nu_mean, nu_std, t0_s), pcm_nandakumar or "
             "pcm_joshi2020 (crossbar_ep/devices/laws.py)",
    "programming_noise": "noise when a target is written: law none | constant | "
                         "pcm_nandakumar | pcm_joshi2020 | reram_wan, std_S for constant",
    "read_noise": "device read noise at the present time: law none | relative | pcm_joshi2020",
    "conventions": "which published form of the model equations the card's fit was made with: "
                   "up_down, slope_bound, exp_range (see Conventions of the fits)",
    "metadata": "provenance written by the device tools, not read by the simulation: fit (data "
                "files and their SHA-256, residual, confidence intervals, model ranking), "
                "aihwkit (aihwkit settings with no crossbar-ep counterpart, kept for export)",
}
METADATA_KEYS = ("fit", "aihwkit")
FAULT_KEYS = {"stuck_at_gmin_frac": "fraction of devices stuck at G_min (SA0)",
              "stuck_at_gmax_frac": "fraction of devices stuck at G_max (SA1)"}
DRIFT_KEYS = section_keys("drift")
READ_NOISE_KEYS = section_keys("read_noise")
CONVENTION_KEYS = {
    "up_down": "symmetric (default): dw_up = dw_min (1 + b), dw_down = dw_min (1 - b); "
               "larger_is_dw_min: the larger step is dw_min and only the other shrinks by "
               "|b| (the same for pow_up_down on pow_step's exponent)",
    "slope_bound": "linear_step: device (default): the slope uses each device's drawn bound; "
                   "nominal: the card's w_max / w_min",
    "exp_range": "exp_step: card (default): z uses the card's w_max - w_min; device: each "
                 "device's own drawn range",
}
CONVENTION_VALUES = {"up_down": ("symmetric", "larger_is_dw_min"),
                     "slope_bound": ("device", "nominal"), "exp_range": ("card", "device")}
PROG_KEYS = section_keys("programming_noise")
# physical ranges (inclusive) of the card's numbers outside params, with their unit; a model
# parameter's range is in its spec (Param.lo, Param.hi)
RANGES = {"g_min_S": (0.0, 1.0, "S"), "g_max_S": (0.0, 1.0, "S"),
          "r_on_ohm": (1.0, 1e12, "ohm"), "on_off_ratio": (1.0, 1e9, "-"),
          "write_voltage_V": (0.0, 100.0, "V"), "pulse_width_s": (0.0, 1.0, "s"),
          "nu_mean": (0.0, 1.0, "-"), "nu_std": (0.0, 1.0, "-"), "t0_s": (0.0, 1e9, "s"),
          "std_S": (0.0, 1.0, "S"), "std_rel": (0.0, 10.0, "-"), "t_read_s": (0.0, 1.0, "s")}


@dataclass(frozen=True)
class DeviceCard:
    """A validated device card.  Conductances in siemens; ``params`` in state units."""

    name: str
    model: str
    source: str
    g_min_S: float
    g_max_S: float
    params: dict
    faults: dict = field(default_factory=dict)
    drift: dict = field(default_factory=dict)
    programming_noise: dict = field(default_factory=dict)
    path: str = "<memory>"
    description: str = ""
    write_voltage_V: float = 1.0
    pulse_width_s: float = 1e-7
    conventions: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    read_noise: dict = field(default_factory=dict)

    def convention(self, key: str) -> str:
        """The card's choice for a convention key (:data:`CONVENTION_VALUES`), or the
        default (the first value)."""
        return self.conventions.get(key, CONVENTION_VALUES[key][0])

    @property
    def w_min(self) -> float:
        return self.params.get("w_min", -1.0)

    @property
    def w_max(self) -> float:
        return self.params.get("w_max", 1.0)

    @property
    def model_class(self):
        """The registered model class (parameter spec, per-device draw, pulse step)."""
        return model_class(self.model)

    @property
    def pulsed(self) -> bool:
        """False for exact-update models (the ideal device): no pulses, bounds or noise."""
        return self.model_class.pulsed

    @property
    def mean_step(self) -> float:
        """Mean state change of one pulse (w units): dw_min, or (w_max - w_min) / p_max."""
        return self.model_class.mean_step(self.params)

    @property
    def n_states(self) -> float:
        """Number of distinguishable states: (w_max - w_min) / dw_min, or p_max; inf if exact."""
        return self.model_class.n_states(self.params)

    def w_to_g(self, w):
        """Normalised state -> conductance (S), linear over [w_min, w_max]."""
        return self.g_min_S + (w - self.w_min) / (self.w_max - self.w_min) * (
            self.g_max_S - self.g_min_S)


def _num(v: Any, w: Where, kind: str, lo: float = -math.inf, hi: float = math.inf,
         unit: str = "") -> Any:
    """A number of kind ``kind`` inside the physical range [lo, hi] (``unit`` for the
    message)."""
    if kind == "list":
        if not isinstance(v, list) or len(v) < 2:
            raise w.fail(f"expected a list of at least 2 numbers, got {_short.repr(v)}")
        return tuple(_num(x, w.child(i), "nonneg", lo, hi, unit) for i, x in enumerate(v))
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise w.fail(f"expected a finite number, got {_short.repr(v)}")
    if kind in ("nonneg", "pos", "posint") and v < 0:
        raise w.fail(f"must not be negative, got {v}")
    if kind in ("pos", "posint") and v == 0:
        raise w.fail("must be > 0")
    if kind == "nonzero" and abs(v) < 1e-3:
        raise w.fail(f"must not be 0 (|value| >= 0.001), got {v:g}")
    if not lo <= v <= hi:
        u = "" if unit in ("", "-") else f" {unit}"
        raise w.fail(f"{v:g}{u} is outside the physical range {lo:g} to {hi:g}{u}; check the "
                     f"value and its unit (docs/devices.md lists every range)")
    if kind == "posint":
        if float(v) != int(v):
            raise w.fail(f"expected a whole number, got {v}")
        return int(v)
    return float(v)


def _check_text(v: Any, w: Where, seen: set | None = None) -> None:
    """Reject control characters (newline, CR, tab, NUL, C0/C1, line separators) in every
    string of the card, keys included: card text must stay on one line wherever it is written
    (netlist comments, plot titles, terminals)."""
    seen = set() if seen is None else seen
    if isinstance(v, str):
        bad = next((c for c in v if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")),
                   None)
        if bad is not None:      # Cf: bidi overrides and zero-width characters hide text
            kind = "invisible formatting" if unicodedata.category(bad) == "Cf" else "control"
            raise w.fail(f"contains the {kind} character {bad!r} (U+{ord(bad):04X}, at "
                         f"position {v.index(bad)}); card text must be one line of printable "
                         f"characters")
    elif isinstance(v, (dict, list)) and id(v) not in seen:   # YAML aliases share objects
        seen.add(id(v))
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for k, x in items:
            _check_text(k, w, seen)
            _check_text(x, w.child(k if isinstance(k, int) else str(k)), seen)


def _check_keys(raw: dict, allowed, w: Where, what: str) -> None:
    for k in raw:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), list(allowed), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise w.child(str(k)).fail(f"{what}; {hint}(allowed: {', '.join(allowed)})")


def card_from_dict(raw: Any, path: str = "<memory>") -> DeviceCard:
    """Validate a card mapping; errors name ``path`` and the key."""
    top = Where(path, "")
    if not isinstance(raw, dict):
        what = "empty" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(f"{path}: a device card must be a mapping of keys (name, model, "
                          f"source, ...), got {what}")
    _check_text(raw, top)
    _check_keys(raw, TOP, top, "unknown key")
    model = raw.get("model")
    models = model_names()
    if not isinstance(model, str) or model not in models:
        close = difflib.get_close_matches(model, models, n=1) if isinstance(model, str) else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise top.child("model").fail(f"unknown model {_short.repr(model)}; use one of "
                                      f"{', '.join(models)}{hint}")
    for k in ("name", "source"):
        if not isinstance(raw.get(k), str) or not raw.get(k).strip():
            raise top.child(k).fail("missing: give a non-empty string"
                                    + (" citing the published parameters" if k == "source"
                                       else ""))
    if not isinstance(raw.get("description", ""), str):
        raise top.child("description").fail("expected a string (free text)")
    # conductance range
    if "r_on_ohm" in raw or "on_off_ratio" in raw:
        if "g_max_S" in raw or "g_min_S" in raw:
            raise top.child("r_on_ohm").fail("give either g_min_S/g_max_S or "
                                             "r_on_ohm/on_off_ratio, not both")
        for k in ("r_on_ohm", "on_off_ratio"):
            if k not in raw:
                raise top.child(k).fail("missing (r_on_ohm and on_off_ratio go together)")
        r_on = _num(raw["r_on_ohm"], top.child("r_on_ohm"), "pos", *RANGES["r_on_ohm"])
        ratio = _num(raw["on_off_ratio"], top.child("on_off_ratio"), "pos",
                     *RANGES["on_off_ratio"])
        if ratio <= 1.0:
            raise top.child("on_off_ratio").fail(f"must be > 1 (R_off > R_on), got {ratio}")
        g_max, g_min = 1.0 / r_on, 1.0 / (r_on * ratio)
    else:
        for k in ("g_min_S", "g_max_S"):
            if k not in raw:
                raise top.child(k).fail("missing: give the conductance range in siemens "
                                        "(or r_on_ohm and on_off_ratio)")
        g_min = _num(raw["g_min_S"], top.child("g_min_S"), "nonneg", *RANGES["g_min_S"])
        g_max = _num(raw["g_max_S"], top.child("g_max_S"), "pos", *RANGES["g_max_S"])
        if g_min >= g_max:
            raise top.child("g_min_S").fail(f"G_min ({g_min:g} S) must be below G_max "
                                            f"({g_max:g} S)")
    # model parameters
    cls = model_class(model)
    spec = cls.params
    praw = raw.get("params") or {}
    pw = top.child("params")
    if not isinstance(praw, dict):
        raise pw.fail("expected a mapping of parameters")
    for k in praw:
        if k not in spec:
            close = difflib.get_close_matches(str(k), list(spec), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            used = ", ".join(spec) if spec else "none"
            raise pw.child(str(k)).fail(f"not a parameter of model {model}; {hint}"
                                        f"(it uses: {used})")
    params = {}
    for k, par in spec.items():
        default = par.default
        if k in praw:
            params[k] = _num(praw[k], pw.child(k), par.kind, par.lo, par.hi, par.unit)
        elif default is REQUIRED:
            raise pw.child(k).fail(f"missing: model {model} needs it")
        else:
            params[k] = default
    if "w_min" in spec and "w_max" in spec and params["w_min"] >= params["w_max"]:
        raise pw.child("w_min").fail(f"must be below w_max ({params['w_max']:g}), got "
                                     f"{params['w_min']:g}")
    if cls.pulsed:
        key = cls.states_key
        states = cls.n_states(params)
        if not 1 <= states <= MAX_STATES:
            raise pw.child(key).fail(
                f"gives {states:.4g} device states; the limit is 1 to {MAX_STATES:.0e} (for a "
                f"continuous device use model: ideal)")
    # optional sections
    faults = _section(raw, "faults", FAULT_KEYS, top)
    for k, v in faults.items():
        faults[k] = _num(v, top.child("faults").child(k), "nonneg")
        if faults[k] > 1:
            raise top.child("faults").child(k).fail(f"is a fraction in [0, 1], got {v}")
    if sum(faults.values()) > 1:
        raise top.child("faults").fail("stuck fractions add up to more than 1")
    drift = validate_section("drift", raw.get("drift"), top.child("drift"))
    prog = validate_section("programming_noise", raw.get("programming_noise"),
                            top.child("programming_noise"))
    read_noise = validate_section("read_noise", raw.get("read_noise"), top.child("read_noise"))
    conv = _section(raw, "conventions", CONVENTION_KEYS, top)
    for k, v in conv.items():
        if v not in CONVENTION_VALUES[k]:
            raise top.child("conventions").child(k).fail(
                f"unknown value {_short.repr(v)}; use {' or '.join(CONVENTION_VALUES[k])}")
    write = {}
    for k in ("write_voltage_V", "pulse_width_s"):
        if k in raw:
            write[k] = _num(raw[k], top.child(k), "pos", *RANGES[k])
    meta = _section(raw, "metadata", dict.fromkeys(METADATA_KEYS), top)
    for k, v in meta.items():
        _plain(v, top.child("metadata").child(k))
    return DeviceCard(raw["name"], model, raw["source"], g_min, g_max, params, faults, drift,
                      prog, path, raw.get("description", ""), **write, conventions=conv,
                      metadata=meta, read_noise=read_noise)


def _plain(v: Any, w: Where, depth: int = 0) -> None:
    """Metadata is plain data: mappings with string keys, lists, strings, finite numbers,
    booleans and null, nested at most 4 deep."""
    if depth > 4:
        raise w.fail("nested too deep (metadata is at most 4 levels of plain data)")
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise w.fail(f"keys must be strings, got {_short.repr(k)}")
            _plain(x, w.child(k), depth + 1)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _plain(x, w.child(i), depth + 1)
    elif isinstance(v, float) and not math.isfinite(v):
        raise w.fail(f"expected a finite number, got {v}")
    elif v is not None and not isinstance(v, (str, int, float, bool)):
        raise w.fail(f"expected plain data (text, numbers, lists, mappings), got "
                     f"{type(v).__name__}")


def _section(raw: dict, key: str, allowed: dict, top: Where) -> dict:
    sec = raw.get(key) or {}
    if not isinstance(sec, dict):
        raise top.child(key).fail("expected a mapping")
    _check_keys(sec, allowed, top.child(key), "unknown key")
    return dict(sec)


def load_card(path: str, overrides: dict | None = None) -> DeviceCard:
    """Read and validate a device card file, or a shipped card by name
    (``ecram_li_tang2018``: :mod:`crossbar_ep.shipped`), optionally with parameter overrides
    (:func:`apply_card_overrides`, from ``crossbar.device_params``)."""
    path = shipped.resolve_card(path)
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a directory, not a device card file (cards live in "
                          f"device_models/)")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such device card file, and no shipped card of that "
                          f"name (crossbar-ep device list names them)")
    try:
        if os.path.getsize(path) > MAX_CARD_BYTES:
            raise ConfigError(f"{path}: {os.path.getsize(path)} bytes is too large for a device "
                              f"card (limit {MAX_CARD_BYTES} bytes)")
        with open(path, encoding="utf-8") as fh:
            raw = yamlio.load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML (cards are plain data; tags such as "
                          f"!!python/object are refused): {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}): save the card "
                          f"as UTF-8 YAML") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the device card ({exc.strerror or exc})") \
            from None
    if overrides and isinstance(raw, dict):
        raw = apply_card_overrides(raw, overrides, path)
        path = f"{path} with crossbar.device_params {dict(overrides)}"
    return card_from_dict(raw, path)


def apply_card_overrides(raw: dict, overrides: dict, path: str) -> dict:
    """Card mapping with overrides: a model parameter name (``up_down``, ``dw_min_dtod``, ...)
    replaces ``params.<name>``; a fault key (``stuck_at_gmin_frac``) replaces
    ``faults.<name>``; ``g_min_S`` / ``g_max_S`` replace the range; ``n_states`` sets
    ``dw_min = (w_max - w_min) / n_states``; ``variation`` multiplies every ``*_dtod``
    parameter.  Unknown names are rejected (the card file named)."""
    import copy
    raw = copy.deepcopy(raw)
    params = raw.setdefault("params", {}) or {}
    if not isinstance(params, dict):
        return raw                       # card_from_dict names the bad params section
    raw["params"] = params
    model = raw.get("model")
    spec = model_class(model).params if model in model_names() else {}

    def real(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for name, value in overrides.items():
        if name == "n_states":
            if "dw_min" not in spec:
                raise ConfigError(f"{path}: crossbar.device_params.n_states: model "
                                  f"{raw.get('model')} has no dw_min to set")
            if not real(value) or not 1 <= value <= MAX_STATES:
                raise ConfigError(f"{path}: crossbar.device_params.n_states: must be a number "
                                  f"from 1 to {MAX_STATES:.0e}, got {_short.repr(value)}")
            lo, hi = params.get("w_min"), params.get("w_max")
            if real(lo) and real(hi):    # else card_from_dict reports the missing bound
                params["dw_min"] = (hi - lo) / float(value)
        elif name == "variation":
            for k in spec:
                if k.endswith("_dtod") and real(params.get(k, spec[k][0])):
                    params[k] = float(value) * params.get(k, spec[k][0])
        elif name in FAULT_KEYS:
            raw.setdefault("faults", {})
            raw["faults"] = dict(raw["faults"] or {}, **{name: value})
        elif name in ("g_min_S", "g_max_S"):
            raw[name] = value
        elif name in spec:
            params[name] = value
        else:
            choices = sorted([*spec, *FAULT_KEYS, "g_min_S", "g_max_S", "n_states",
                              "variation"])
            close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{path}: crossbar.device_params.{name}: not a parameter of "
                              f"model {raw.get('model')}; {hint}(allowed: {', '.join(choices)})")
    return raw


def describe(card: DeviceCard) -> str:
    """Human-readable parameter listing with units, number of states and citation."""
    spec = card.model_class.params
    lines = [f"{card.name}  ({card.path})", f"  model: {card.model}",
             f"  source: {card.source}",
             f"  conductance range: G_min = {card.g_min_S:.4g} S, G_max = {card.g_max_S:.4g} S "
             f"(on/off {card.g_max_S / card.g_min_S if card.g_min_S > 0 else math.inf:.3g})",
             f"  number of states: {card.n_states:.0f}" if math.isfinite(card.n_states)
             else "  number of states: continuous (ideal)",
             f"  programming pulse: {card.write_voltage_V:g} V x {card.pulse_width_s:g} s "
             f"(energy V^2 G t per pulse)"]
    if spec:
        lines.append("  parameters:")
        for k, par in spec.items():
            unit, doc, v = par.unit, par.doc, card.params[k]
            vs = ", ".join(f"{x:g}" for x in v) if isinstance(v, tuple) else f"{v:g}"
            lines.append(f"    {k:<16} = {vs:<12} [{unit}]  {doc}")
    for title, sec, docs in (("faults", card.faults, FAULT_KEYS),
                             ("drift", card.drift, DRIFT_KEYS),
                             ("programming noise", card.programming_noise, PROG_KEYS),
                             ("read noise", card.read_noise, READ_NOISE_KEYS)):
        if sec:
            lines.append(f"  {title}:")
            for k, v in sec.items():
                lines.append(f"    {k:<16} = {v!s:<12} {docs[k]}")
    return "\n".join(lines)

"""IBM aihwkit device settings <-> device cards, without aihwkit.

The dictionary form (``crossbar-ep device import-aihwkit`` / ``export-aihwkit``) is JSON::

    {"device": "LinearStepDevice",            # the aihwkit class
     "parameters": {...},                     # its fields, as dataclasses.asdict gives them
     "crossbar_ep": {...}}                    # optional: card fields aihwkit has no field for

With aihwkit installed, ``{"device": type(d).__name__, "parameters": dataclasses.asdict(d)}``
written by ``json.dump(..., indent=2)`` is the form; ``getattr(aihwkit.simulator.configs,
form["device"])(**form["parameters"])`` reads it back (``drift`` as a ``DriftParameter``).

The fields, their order and defaults are aihwkit's (``aihwkit.simulator.configs.devices``);
:data:`CLASSES` maps each class to a model, :data:`SHARED` / :data:`OWN` the fields to card
parameters.  Export writes every field of the class in aihwkit's order (deterministic:
exporting an imported file that was in this form reproduces it byte for byte); a card
round-trips exactly (card -> form -> card), fields without a counterpart travel in
``crossbar_ep`` (card side) or in the card's ``metadata.aihwkit`` (aihwkit side).
"""

from __future__ import annotations

import copy
import difflib
import json
import os

from crossbar_ep.errors import ConfigError, CrossbarEPError

DRIFT = {"nu": 0.0, "t_0": 1.0, "reset_tol": 1e-7, "nu_dtod": 0.0, "nu_std": 0.0,
         "wg_ratio": 1.0, "g_offset": 0.0, "w_offset": 0.0, "nu_k": 0.0, "log_g0": 0.0,
         "w_noise_std": 0.0}
PULSED = {"construction_seed": 0, "corrupt_devices_prob": 0.0, "corrupt_devices_range": 0.1,
          "diffusion": 0.0, "diffusion_dtod": 0.0, "drift": DRIFT, "dw_min": 0.001,
          "dw_min_dtod": 0.3, "dw_min_dtod_log_normal": False, "dw_min_std": 0.3,
          "enforce_consistency": True, "lifetime": 0.0, "lifetime_dtod": 0.0,
          "perfect_bias": False, "reset": 0.0, "reset_dtod": 0.0, "reset_std": 0.01,
          "up_down": 0.0, "up_down_dtod": 0.01, "w_max": 0.6, "w_max_dtod": 0.3, "w_min": -0.6,
          "w_min_dtod": 0.3, "count_pulses": False}
_WRITE = {"write_noise_std": 0.0, "apply_write_noise_on_set": True}
_REVERSE = {"reverse_up": False, "reverse_down": False, "reverse_offset": 0.01}
CLASSES = {   # aihwkit class -> (model, its own fields after PulsedDevice's, with defaults)
    "ConstantStepDevice": ("constant_step", {}),
    "LinearStepDevice": ("linear_step", {
        "gamma_up": 0.0, "gamma_down": 0.0, "gamma_up_dtod": 0.05, "gamma_down_dtod": 0.05,
        "allow_increasing": False, "mean_bound_reference": True, "mult_noise": True, **_WRITE,
        **_REVERSE}),
    "SoftBoundsDevice": ("soft_bounds", {"mult_noise": True, **_WRITE, **_REVERSE}),
    "ExpStepDevice": ("exp_step", {
        "A_up": 0.00081, "A_down": 0.36833, "gamma_up": 12.44625, "gamma_down": 12.78785,
        "a": 0.244, "b": 0.2425, "dw_min_std_add": 0.0, "dw_min_std_slope": 0.0, **_WRITE}),
    "PowStepDevice": ("pow_step", {
        "pow_gamma": 1.0, "pow_gamma_dtod": 0.1, "pow_up_down": 0.0, "pow_up_down_dtod": 0.0,
        **_WRITE}),
    "PiecewiseStepDevice": ("piecewise", {"piecewise_up": [1], "piecewise_down": [1],
                                          **_WRITE}),
}
SHARED = ("dw_min", "dw_min_dtod", "dw_min_std", "up_down", "up_down_dtod", "w_max",
          "w_max_dtod", "w_min", "w_min_dtod")
OWN = {"LinearStepDevice": ("gamma_up", "gamma_down", "gamma_up_dtod", "gamma_down_dtod",
                            "write_noise_std"),
       "SoftBoundsDevice": ("write_noise_std",),
       "ExpStepDevice": ("A_up", "A_down", "gamma_up", "gamma_down", "a", "b",
                         "write_noise_std"),
       "PowStepDevice": ("pow_gamma", "pow_gamma_dtod", "pow_up_down", "write_noise_std"),
       "PiecewiseStepDevice": ("piecewise_up", "piecewise_down", "write_noise_std")}
# fields that change nothing crossbar-ep simulates (kept for export whatever their value)
SOFTWARE = ("construction_seed", "count_pulses", "enforce_consistency",
            "apply_write_noise_on_set", "perfect_bias")
DEFAULTS = {"g_min_S": 1e-7, "g_max_S": 25e-6}       # an imported card's conductance range
CARD_EXTRA = ("name", "source", "description", "g_min_S", "g_max_S", "write_voltage_V",
              "pulse_width_s", "faults", "drift", "programming_noise", "read_noise",
              "conventions", "metadata", "params")

MAPPING_DOC = [   # (aihwkit field, card key, note) for docs/devices.md
    ("class", "`model`", "ConstantStepDevice: constant_step, LinearStepDevice: linear_step, "
     "SoftBoundsDevice: soft_bounds, ExpStepDevice: exp_step, PowStepDevice: pow_step, "
     "PiecewiseStepDevice: piecewise"),
    (", ".join(SHARED), "`params`, same names", "relative spreads as in aihwkit"),
    ("up_down", "`conventions.up_down`", "a nonzero up_down (or pow_up_down) imports "
     "`larger_is_dw_min`, aihwkit's form (the larger step is dw_min); 0 keeps `symmetric`, "
     "which then equals aihwkit's also for up_down_dtod (aihwkit adds its term to one step and "
     "takes it from the other; with `larger_is_dw_min` crossbar-ep shrinks only one step)"),
    ("gamma_up, gamma_down, gamma_up_dtod, gamma_down_dtod", "`params`, same names",
     "LinearStepDevice"),
    ("mean_bound_reference", "`conventions.slope_bound`", "true: `nominal`, false: `device`"),
    ("A_up, A_down, gamma_up, gamma_down, a, b", "`params`, same names",
     "ExpStepDevice; imports `conventions.exp_range: device` (aihwkit's z uses each "
     "device's range)"),
    ("pow_gamma, pow_gamma_dtod, pow_up_down", "`params`, same names", "PowStepDevice"),
    ("piecewise_up, piecewise_down", "`params`, same names", "PiecewiseStepDevice, at least 2 "
     "nodes; aihwkit spreads the nodes over each device's range, crossbar-ep over the card's"),
    ("write_noise_std", "`params.write_noise_std`", "in units of dw_min in both"),
    (", ".join(SOFTWARE), "`metadata.aihwkit`", "no effect on the simulation; kept for export"),
    ("mult_noise false, allow_increasing, reverse_*, diffusion*, lifetime*, reset*, drift, "
     "corrupt_devices_*, dw_min_dtod_log_normal, dw_min_std_add, dw_min_std_slope, "
     "pow_up_down_dtod", "refused unless `--allow-unsupported`", "then kept in "
     "`metadata.aihwkit` for export; crossbar-ep does not simulate them"),
    ("(none)", "name, source, g_min_S, g_max_S, faults, drift, programming_noise, read_noise, "
     "...",
     "exported under `crossbar_ep` where they differ from an import's defaults (name "
     "`aihwkit <class>`, G 0.1 to 25 uS)"),
]


def class_fields(cls: str) -> dict:
    """Every field of an aihwkit class in aihwkit's order, with its default."""
    return {**copy.deepcopy(PULSED), **copy.deepcopy(CLASSES[cls][1])}


def _implied_conventions(cls: str, p: dict) -> dict:
    conv = {}
    if p.get("up_down", 0.0) != 0.0 or p.get("pow_up_down", 0.0) != 0.0:
        conv["up_down"] = "larger_is_dw_min"
    if cls == "LinearStepDevice" and p.get("mean_bound_reference", True):
        conv["slope_bound"] = "nominal"
    if cls == "ExpStepDevice":
        conv["exp_range"] = "device"
    return conv


def from_aihwkit(form, path: str = "<dict>", allow_unsupported: bool = False) -> tuple:
    """The raw card mapping of an aihwkit form, and the aihwkit fields kept in its
    metadata that crossbar-ep does not simulate."""
    if not isinstance(form, dict) or "device" not in form or "parameters" not in form:
        raise ConfigError(f"{path}: expected a JSON object with keys device (the aihwkit "
                          f"class) and parameters (its fields)")
    for k in form:
        if k not in ("device", "parameters", "crossbar_ep"):
            raise ConfigError(f"{path}: {k}: unknown key (allowed: device, parameters, "
                              f"crossbar_ep)")
    cls = form["device"]
    if cls not in CLASSES:
        raise ConfigError(f"{path}: device: {cls!r} is not supported; use one of "
                          f"{', '.join(CLASSES)}")
    params = form["parameters"]
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: parameters: expected a mapping of {cls} fields")
    fields = class_fields(cls)
    for k in params:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{path}: parameters.{k}: not a field of aihwkit {cls}{hint}")
    p = {**fields, **params}
    mapped = set(SHARED) | set(OWN.get(cls, ())) | {"mean_bound_reference"}
    kept, unsupported = {}, []
    for k, default in fields.items():
        if k in mapped or p[k] == default:
            continue
        kept[k] = p[k]
        if k not in SOFTWARE:
            unsupported.append(f"{k}={json.dumps(p[k])}")
    if unsupported and not allow_unsupported:
        raise ConfigError(f"{path}: parameters.{unsupported[0].split('=')[0]}: "
                          f"{unsupported[0]} has no counterpart in crossbar-ep (unsupported: "
                          f"{', '.join(unsupported)}); set it to aihwkit's default "
                          f"({json.dumps(fields[unsupported[0].split('=')[0]])}) or pass "
                          f"--allow-unsupported to keep it in the card's metadata for export "
                          f"(crossbar-ep will not simulate it)")
    for k in ("piecewise_up", "piecewise_down"):
        if k in p and (not isinstance(p[k], list) or len(p[k]) < 2):
            raise ConfigError(f"{path}: parameters.{k}: crossbar-ep needs at least 2 nodes, "
                              f"got {p[k]!r} (one node is a constant step: ConstantStepDevice)")
    model = CLASSES[cls][0]
    card = {"name": f"aihwkit {cls}", "model": model, "source": f"IBM aihwkit {cls} settings",
            **DEFAULTS,
            "params": {k: (list(map(float, p[k])) if isinstance(p[k], list) else p[k])
                       for k in (*SHARED, *OWN.get(cls, ()))}}
    conv = _implied_conventions(cls, p)
    if conv:
        card["conventions"] = conv
    if kept:
        card["metadata"] = {"aihwkit": kept}
    extra = form.get("crossbar_ep") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{path}: crossbar_ep: expected a mapping of card fields")
    for k, v in extra.items():
        if k not in CARD_EXTRA:
            raise ConfigError(f"{path}: crossbar_ep.{k}: not a card field (allowed: "
                              f"{', '.join(CARD_EXTRA)})")
        if k == "params":
            card["params"].update(v)
        elif k == "metadata":
            card["metadata"] = {**card.get("metadata", {}), **v}
        else:
            card[k] = v
    return card, [u.split("=")[0] for u in unsupported]


def to_aihwkit(card) -> tuple:
    """(the aihwkit form of a card, notes on what aihwkit will simulate differently)."""
    inverse = {m: c for c, (m, _) in CLASSES.items()}
    if card.model not in inverse:
        raise CrossbarEPError(f"{card.path}: model {card.model} has no aihwkit counterpart "
                              f"among {', '.join(CLASSES)}")
    cls = inverse[card.model]
    p = class_fields(cls)
    spec = card.model_class.params
    own = (*SHARED, *OWN.get(cls, ()))
    for k in own:
        v = card.params[k]
        p[k] = list(v) if isinstance(v, tuple) else v
    if cls == "LinearStepDevice":
        p["mean_bound_reference"] = card.convention("slope_bound") == "nominal"
    p.update(copy.deepcopy(card.metadata.get("aihwkit", {})))
    extra, notes = {}, []
    raw_card = {"name": card.name, "source": card.source, "description": card.description,
                "g_min_S": card.g_min_S, "g_max_S": card.g_max_S,
                "write_voltage_V": card.write_voltage_V, "pulse_width_s": card.pulse_width_s,
                "faults": card.faults, "drift": card.drift,
                "programming_noise": card.programming_noise, "read_noise": card.read_noise}
    base = {"name": f"aihwkit {cls}", "source": f"IBM aihwkit {cls} settings",
            "description": "", **DEFAULTS, "write_voltage_V": 1.0, "pulse_width_s": 1e-7,
            "faults": {}, "drift": {}, "programming_noise": {}, "read_noise": {}}
    for k, v in raw_card.items():
        if v != base[k]:
            extra[k] = copy.deepcopy(v)
    for k in ("faults", "drift", "programming_noise", "read_noise"):
        if k in extra:
            notes.append(f"{k} has no aihwkit device field: kept under crossbar_ep, aihwkit "
                         f"will not simulate it")
    left = {k: card.params[k] for k in spec if k not in own and card.params[k] !=
            spec[k].default}
    if left:
        extra["params"] = left
        notes.append(f"{', '.join(left)}: no field in aihwkit {cls}: kept under crossbar_ep")
    implied = _implied_conventions(cls, p)
    if dict(card.conventions) != implied:
        extra["conventions"] = dict(card.conventions)
        notes.append(f"conventions {dict(card.conventions)} differ from the form aihwkit "
                     f"{cls} simulates ({implied}): kept under crossbar_ep")
    meta = {k: v for k, v in card.metadata.items() if k != "aihwkit"}
    if meta:
        extra["metadata"] = copy.deepcopy(meta)
    form = {"device": cls, "parameters": p}
    if extra:
        form["crossbar_ep"] = extra
    return form, notes


def dumps(form: dict) -> str:
    """The form as text: JSON, 2-space indent, aihwkit's field order, a final newline."""
    return json.dumps(form, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def import_file(path: str, out: str, allow_unsupported: bool = False) -> tuple:
    """Read an aihwkit form (JSON) and write the card (YAML); returns (card, fields kept in
    the card's metadata that crossbar-ep does not simulate)."""
    import yaml

    from crossbar_ep.devices.card import card_from_dict, load_card
    if not os.path.isfile(path):
        raise CrossbarEPError(f"{path}: no such file (an aihwkit device form in JSON)")
    try:
        with open(path, encoding="utf-8") as fh:
            form = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CrossbarEPError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise CrossbarEPError(f"{path}: cannot read ({exc.strerror or exc})") from None
    raw, kept = from_aihwkit(form, path, allow_unsupported)
    card_from_dict(raw, path)                                      # valid before writing
    text = (f"# Imported from aihwkit {form['device']} settings by crossbar-ep device "
            f"import-aihwkit.\n" + yaml.safe_dump(raw, sort_keys=False, width=100,
                                                 allow_unicode=True))
    _write(out, text)
    return load_card(out), kept


def export_file(card_path: str, out: str) -> tuple:
    """Write a card's aihwkit form (JSON); returns (aihwkit class, notes)."""
    from crossbar_ep.devices.card import load_card
    form, notes = to_aihwkit(load_card(card_path))
    _write(out, dumps(form))
    return form["device"], notes


def _write(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise CrossbarEPError(f"{path}: cannot write ({exc.strerror or exc})") from None

"""aihwkit interop without aihwkit: device settings in aihwkit's dictionary (JSON) form <->
device cards.

- a form as aihwkit writes it (every field of the class, its order, ``indent=2``), imported
  and exported again, is the same file byte for byte, for each of the six classes;
- every shipped card of a mappable model round-trips exactly (card -> form -> card) and its
  exported file survives import and export unchanged;
- an imported card simulates aihwkit's equations (written out here from its documentation);
- fields crossbar-ep does not simulate are refused, or kept for export on request.
"""

import glob
import json
import math
import os
import re

import numpy as np
import pytest
from conftest import REPO

from crossbar_ep.cli import main
from crossbar_ep.devices import pulse_reference
from crossbar_ep.devices.aihwkit_io import (
    CLASSES,
    class_fields,
    dumps,
    from_aihwkit,
    to_aihwkit,
)
from crossbar_ep.devices.card import card_from_dict, load_card
from crossbar_ep.errors import ConfigError

CARDS = sorted(glob.glob(os.path.join(REPO, "device_models", "*.yaml")))
SET = {   # non-default values per class, as a user's aihwkit device would hold them
    "ConstantStepDevice": {"dw_min": 0.002, "up_down": 0.05, "w_max": 1.0, "w_min": -1.0,
                           "construction_seed": 11},
    "LinearStepDevice": {"dw_min": 0.002, "w_max": 1.1724, "w_min": -0.8276,
                         "gamma_up": 0.1153, "gamma_down": 0.5085, "dw_min_dtod": 0.1,
                         "mean_bound_reference": False},
    "SoftBoundsDevice": {"dw_min": 0.002, "w_max": 1.25, "w_min": -0.75,
                         "write_noise_std": 56.0},
    "ExpStepDevice": {"dw_min": 0.00135, "up_down": 0.259359, "w_max": 1.0, "w_min": -1.0,
                      "a": -0.5, "b": -0.5, "gamma_up": 5.0, "gamma_down": 5.0,
                      "A_up": -1.18445, "A_down": -0.081404},
    "PowStepDevice": {"pow_gamma": 2.0, "pow_up_down": 0.3, "w_max": 1.0, "w_min": -1.0},
    "PiecewiseStepDevice": {"piecewise_up": [1.2, 1.0, 0.5], "piecewise_down": [0.5, 1.0, 1.2],
                            "w_max": 1.0, "w_min": -1.0},
}


def aihwkit_text(cls, **fields):
    """What json.dump({"device": ..., "parameters": dataclasses.asdict(d)}, indent=2) writes
    for an aihwkit device of class ``cls`` with ``fields`` set."""
    return json.dumps({"device": cls, "parameters": {**class_fields(cls), **fields}},
                      indent=2) + "\n"


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_aihwkit_file_imported_and_exported_is_the_same_file(tmp_path, cls):
    src, card, out = tmp_path / "dev.json", tmp_path / "dev.yaml", tmp_path / "back.json"
    src.write_text(aihwkit_text(cls, **SET[cls]))
    assert main(["device", "import-aihwkit", str(src), "-o", str(card)]) == 0
    c = load_card(str(card))
    assert c.model == CLASSES[cls][0]
    for k, v in SET[cls].items():
        if k in c.params:
            assert c.params[k] == (tuple(v) if isinstance(v, list) else v), k
    assert main(["device", "export-aihwkit", str(card), "-o", str(out)]) == 0
    assert out.read_bytes() == src.read_bytes()


def card_fields(c):
    return (c.name, c.model, c.source, c.description, c.g_min_S, c.g_max_S, c.params,
            c.faults, c.drift, c.programming_noise, c.read_noise, c.write_voltage_V,
            c.pulse_width_s, c.conventions, c.metadata)


@pytest.mark.parametrize("path", CARDS, ids=os.path.basename)
def test_every_mappable_card_round_trips_exactly(tmp_path, path):
    card = load_card(path)
    if card.model not in {m for m, _ in CLASSES.values()}:
        with pytest.raises(Exception, match="no aihwkit counterpart"):
            to_aihwkit(card)
        return
    form, _notes = to_aihwkit(card)
    back = card_from_dict(from_aihwkit(json.loads(dumps(form)))[0])
    assert card_fields(back) == card_fields(card)
    out, card2, out2 = tmp_path / "a.json", tmp_path / "a.yaml", tmp_path / "b.json"
    assert main(["device", "export-aihwkit", path, "-o", str(out)]) == 0
    assert main(["device", "import-aihwkit", str(out), "-o", str(card2)]) == 0
    assert main(["device", "export-aihwkit", str(card2), "-o", str(out2)]) == 0
    assert out2.read_bytes() == out.read_bytes()


def test_pcm_card_notes_what_aihwkit_will_not_simulate():
    form, notes = to_aihwkit(load_card(os.path.join(REPO, "device_models",
                                                    "pcm_nandakumar2020.yaml")))
    assert form["device"] == "ExpStepDevice" and form["parameters"]["a"] == -1.0
    assert set(form["crossbar_ep"]) >= {"drift", "programming_noise", "name", "source"}
    assert any(n.startswith("drift") for n in notes)


def aihwkit_linear_step(p, w, pulses, bmax, bmin):
    """aihwkit's LinearStep update, noiseless nominal device (its documentation): the step
    d dw_d (1 - |gamma_d| w / b_d), clipped, b the mean bound (mean_bound_reference)."""
    out, d = [], 1 if pulses > 0 else -1
    for _ in range(abs(pulses)):
        if d > 0:
            w += p["dw_min"] * max(1 - abs(p["gamma_up"]) * w / bmax, 0)
        else:
            w -= p["dw_min"] * max(1 - abs(p["gamma_down"]) * w / bmin, 0)
        w = min(max(w, bmin), bmax)
        out.append(w)
    return np.array(out)


def test_imported_cards_simulate_aihwkit_equations():
    from test_preset_cards import aihwkit_exp_step
    p = {**class_fields("LinearStepDevice"), **SET["LinearStepDevice"],
         "mean_bound_reference": True}
    raw, _ = from_aihwkit({"device": "LinearStepDevice", "parameters": p})
    card = card_from_dict(raw)
    assert card.convention("slope_bound") == "nominal"
    up = pulse_reference(card, 0.0, 300)
    np.testing.assert_allclose(up, aihwkit_linear_step(p, 0.0, 300, 1.1724, -0.8276),
                               atol=1e-12)
    e = {**class_fields("ExpStepDevice"), **SET["ExpStepDevice"]}
    card = card_from_dict(from_aihwkit({"device": "ExpStepDevice", "parameters": e})[0])
    assert card.conventions == {"up_down": "larger_is_dw_min", "exp_range": "device"}
    for sign in (1, -1):
        np.testing.assert_allclose(pulse_reference(card, 0.2, 200 * sign),
                                   aihwkit_exp_step(e, 0.2, 200 * sign), atol=1e-12)
    assert math.isclose(pulse_reference(card, 0.0, 1)[0], 0.00135 * (1 + 1.18445 *
                                                                     math.exp(-2.5)))


def test_unsupported_fields_are_refused_or_kept(tmp_path, capsys):
    src = tmp_path / "cap.json"
    src.write_text(aihwkit_text("LinearStepDevice", mult_noise=False, lifetime=1e6,
                                gamma_up=0.05, gamma_down=0.05))
    with pytest.raises(ConfigError, match=r"parameters.lifetime: lifetime=1000000.0 has no "
                       r"counterpart in crossbar-ep \(unsupported: lifetime=1000000.0, "
                       r"mult_noise=false\).*--allow-unsupported"):
        from_aihwkit(json.loads(src.read_text()), str(src))
    card = tmp_path / "cap.yaml"
    assert main(["device", "import-aihwkit", str(src), "-o", str(card)]) == 2
    assert "mult_noise" in capsys.readouterr().err
    assert main(["device", "import-aihwkit", str(src), "-o", str(card),
                 "--allow-unsupported"]) == 0
    assert "warning: aihwkit lifetime kept" in capsys.readouterr().err
    assert load_card(str(card)).metadata["aihwkit"] == {"lifetime": 1e6, "mult_noise": False}
    back = tmp_path / "back.json"
    assert main(["device", "export-aihwkit", str(card), "-o", str(back)]) == 0
    assert back.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("form,msg", [
    ({"device": "SoftBoundsPmaxDevice", "parameters": {}}, r"is not supported; use one of"),
    ({"device": "LinearStepDevice", "parameters": {"gama_up": 0.1}},
     r"parameters.gama_up: not a field of aihwkit LinearStepDevice; did you mean 'gamma_up'"),
    ({"device": "PiecewiseStepDevice", "parameters": {}}, r"at least 2 nodes"),
    ({"parameters": {}}, r"keys device .* and parameters"),
    ({"device": "ConstantStepDevice", "parameters": {"up_down": 5.0}},
     r"params.up_down: 5 is outside the physical range"),
])
def test_bad_forms_get_clear_errors(tmp_path, capsys, form, msg):
    src = tmp_path / "bad.json"
    src.write_text(json.dumps(form))
    assert main(["device", "import-aihwkit", str(src), "-o", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "Traceback" not in err
    assert re.search(msg, err), err

"""Card magnitudes: every device parameter has a physical range in its spec, checked when a
card loads, with the card's file and key in the message.

Before the ranges, these cards loaded and then failed or trained silently wrong:
``write_voltage_V: 1e300`` (an OverflowError traceback in the energy), drift ``nu_mean: 1e6``
(every weight zeroed), ``g_max_S: 1e300`` (an energy of 3.4e293 J), ``up_down: +-5`` (a step
of the wrong sign), ``dw_min_dtod: 1e6`` (weights of 8e5).
"""

import glob
import math
import os

import pytest
import yaml
from conftest import REPO

from crossbar_ep.cli import main
from crossbar_ep.devices import model_class, model_names
from crossbar_ep.devices.card import RANGES, card_from_dict, load_card
from crossbar_ep.errors import ConfigError

CARDS = sorted(glob.glob(os.path.join(REPO, "device_models", "*.yaml")))
ECRAM = os.path.join(REPO, "device_models", "ecram_li_tang2018.yaml")
PCM = os.path.join(REPO, "device_models", "pcm_nandakumar2020.yaml")
AGASI = os.path.join(REPO, "device_models", "neurosim_agasi_jo2010.yaml")


def bad_card(tmp_path, base, edit):
    raw = yaml.safe_load(open(base, encoding="utf-8"))
    edit(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


CASES = [
    ("write_voltage_V", lambda r: r.update(write_voltage_V=1e300), ECRAM,
     r"write_voltage_V: 1e\+300 V"),
    ("nu_mean", lambda r: r.update(drift={"nu_mean": 1e6, "nu_std": 0.0}), ECRAM,
     r"drift\.nu_mean: 1e\+06 is outside the physical range 0 to 1"),
    ("g_max_S", lambda r: r.update(g_max_S=1e300), ECRAM, r"g_max_S: 1e\+300 S is outside"),
    ("up_down+5", lambda r: r["params"].update(up_down=5.0), ECRAM,
     r"params\.up_down: 5 is outside the physical range -1 to 1"),
    ("up_down-5", lambda r: r["params"].update(up_down=-5.0), ECRAM,
     r"params\.up_down: -5 is outside the physical range -1 to 1"),
    ("dw_min_dtod", lambda r: r["params"].update(dw_min_dtod=1e6), ECRAM,
     r"params\.dw_min_dtod: 1e\+06 is outside the physical range 0 to 2"),
    ("pmax_A", lambda r: r["params"].update(A_up=1e-9), AGASI, r"params\.A_up: must not be 0"),
    ("exp_gamma", lambda r: r["params"].update(gamma_up=1e3), PCM,
     r"params\.gamma_up: 1000 is outside the physical range -20 to 20"),
]


@pytest.mark.parametrize("name,edit,base,msg", CASES, ids=[c[0] for c in CASES])
def test_out_of_range_values_are_refused_with_file_and_key(tmp_path, capsys, name, edit, base,
                                                          msg):
    path = bad_card(tmp_path, base, edit)
    with pytest.raises(ConfigError, match=msg) as exc:
        load_card(path)
    assert str(exc.value).startswith(path + ":")
    assert main(["device", "info", path]) == 2            # the CLI: one line, no traceback
    err = capsys.readouterr().err
    assert path in err and "Traceback" not in err


def test_override_out_of_range_names_the_override(tmp_path):
    with pytest.raises(ConfigError, match=r"with crossbar.device_params .*up_down: 5 is outside"):
        load_card(ECRAM, {"up_down": 5.0})


def test_every_parameter_has_a_finite_range_holding_its_default():
    for m in model_names():
        for k, par in model_class(m).params.items():
            assert math.isfinite(par.lo) and math.isfinite(par.hi), (m, k)
            assert par.lo <= par.hi, (m, k)
            if isinstance(par.default, (int, float)):
                assert par.lo <= par.default <= par.hi, (m, k)
    for k, (lo, hi, unit) in RANGES.items():
        assert 0 <= lo < hi < math.inf and unit, k


def test_shipped_cards_load_and_the_variation_sweep_stays_in_range():
    """Every card loads, also with every spread tripled (experiments/sweeps/variation.yaml)."""
    for path in CARDS:
        load_card(path)
        load_card(path, {"variation": 3.0})


def test_range_edges_are_inclusive():
    raw = {"name": "t", "model": "constant_step", "source": "test", "g_min_S": 0.0,
           "g_max_S": 1.0, "params": {"dw_min": 0.01, "w_min": -1.0, "w_max": 1.0,
                                      "up_down": 1.0, "dw_min_dtod": 2.0}}
    card = card_from_dict(raw)
    assert card.params["up_down"] == 1.0 and card.g_max_S == 1.0
    raw["params"]["up_down"] = 1.0 + 1e-9
    with pytest.raises(ConfigError, match="up_down"):
        card_from_dict(raw)


def test_list_nodes_are_checked_one_by_one():
    raw = {"name": "t", "model": "piecewise", "source": "test", "g_min_S": 1e-7,
           "g_max_S": 1e-5, "params": {"dw_min": 0.01, "w_min": -1.0, "w_max": 1.0,
                                       "piecewise_up": [1.0, 500.0], "piecewise_down": [1, 1]}}
    with pytest.raises(ConfigError, match=r"t.yaml: params.piecewise_up\[1\]: 500 is outside "
                       r"the physical range 0 to 100"):
        card_from_dict(raw, "t.yaml")

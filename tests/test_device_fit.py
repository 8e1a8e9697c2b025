"""crossbar-ep device fit: measured pulse trains -> a device card.

Recovery: for the model of every pulsed shipped card (and pow_step, piecewise), devices are
drawn from a card with known parameters, spreads and noise and pulsed through the project's
own device simulation (``DeviceArray``: the card's device-to-device draw, the pulse kernel's
cycle-to-cycle noise, the device bounds); the fit sees only the CSV.  The values the fit must
recover are what the drawn devices hold, computed here with NumPy from the arrays' drawn
parameters (nominal values are the devices' means, spreads the standard deviations of their
own values, relative ones in units of the mean; with 24 devices they differ from the card's by
up to a third, which is the draw, not the fit).

Tolerances (cycle-to-cycle noise 10 % of a step, trains long enough to reach both bounds):
nominal values within 5 % (the asymmetries up_down and pow_up_down, relative differences of
two steps, within 0.01), spreads within 20 % (spreads the draw leaves under 0.02: within 0.01),
the cycle-to-cycle noise within 10 %.
"""

import math
import os

import numpy as np
import pytest
import yaml

from crossbar_ep.cli import main
from crossbar_ep.devices import DeviceArray
from crossbar_ep.devices.card import card_from_dict, load_card
from crossbar_ep.devices.fit_card import fit_card
from crossbar_ep.devices.fit_data import read_pulse_data, write_pulse_csv
from crossbar_ep.devices.trains import simulate_trains
from crossbar_ep.errors import CrossbarEPError, DataError

N_DEV, SEED = 24, 5
CASES = {   # model: (params, conventions, pulses per train); shapes after the shipped cards
    "constant_step": (dict(dw_min=0.01, w_min=-1.0, w_max=1.0, up_down=0.1, dw_min_dtod=0.3,
                           up_down_dtod=0.05, w_max_dtod=0.1, w_min_dtod=0.1,
                           dw_min_std=0.1), {}, 500),
    "linear_step": (dict(dw_min=0.01, w_min=-0.8276, w_max=1.1724, up_down=0.0,
                         dw_min_dtod=0.1, up_down_dtod=0.01, w_max_dtod=0.05, w_min_dtod=0.05,
                         dw_min_std=0.1, gamma_up=0.1153, gamma_down=0.5085, gamma_up_dtod=0.05,
                         gamma_down_dtod=0.05),
                    {"up_down": "larger_is_dw_min", "slope_bound": "nominal"}, 270),
    "soft_bounds": (dict(dw_min=0.01, w_min=-0.75, w_max=1.25, up_down=0.0, dw_min_dtod=0.3,
                         up_down_dtod=0.01, w_max_dtod=0.24, w_min_dtod=0.4, dw_min_std=0.1),
                    {"up_down": "larger_is_dw_min"}, 500),
    "soft_bounds_pmax": (dict(p_max=97, A_up=0.4992, A_down=-0.2003, w_min=-1.0, w_max=1.0,
                              A_dtod=0.1, w_max_dtod=0.05, w_min_dtod=0.05, c2c_sigma=0.001),
                         {}, 130),
    "exp_step": (dict(dw_min=0.005, w_min=-1.0, w_max=1.0, up_down=0.1, dw_min_dtod=0.2,
                      up_down_dtod=0.05, w_max_dtod=0.1, w_min_dtod=0.1, dw_min_std=0.1,
                      a=-0.5, b=-0.5, gamma_up=5.0, gamma_down=5.0, A_up=-5.0, A_down=-0.1),
                 {"up_down": "larger_is_dw_min", "exp_range": "device"}, 300),
    "pow_step": (dict(dw_min=0.02, w_min=-1.0, w_max=1.0, up_down=0.1, dw_min_dtod=0.2,
                      up_down_dtod=0.05, w_max_dtod=0.1, w_min_dtod=0.1, dw_min_std=0.1,
                      pow_gamma=1.2, pow_up_down=0.3, pow_gamma_dtod=0.1), {}, 500),
    "piecewise": (dict(dw_min=0.02, w_min=-1.0, w_max=1.0, up_down=0.0, dw_min_dtod=0.2,
                       w_max_dtod=0.1, w_min_dtod=0.1, dw_min_std=0.1,
                       piecewise_up=[1.2, 1.0, 0.8, 0.5, 0.2],
                       piecewise_down=[0.3, 0.6, 0.9, 1.1, 1.2]), {}, 200),
}
G_RANGE = (5e-6, 25e-6)


def make_card(model, **over):
    params, conv, _n = CASES[model]
    raw = {"name": model, "model": model, "source": "test", "g_min_S": G_RANGE[0],
           "g_max_S": G_RANGE[1], "params": {**params, **over}}
    if conv:
        raw["conventions"] = conv
    return card_from_dict(raw)


def measure(tmp_path, model, n_dev=N_DEV, cycles=2, **over):
    card = make_card(model, **over)
    rows = simulate_trains(card, n_dev, cycles, CASES[model][2], seed=SEED)
    path = str(tmp_path / f"{model}.csv")
    write_pulse_csv(path, rows)
    return card, path


def drawn(card, n_dev=N_DEV) -> dict:
    """What the drawn devices hold (independent of the fit): each device's own step scale,
    asymmetry, bounds and shape, then their means and standard deviations as the card's
    nominal values and spreads."""
    arr = DeviceArray(card, (1, n_dev), np.random.default_rng(SEED))
    p, cp = arr.device_params, card.params
    out = {"w_max_dtod": np.std(arr.wmax, ddof=1) / abs(cp["w_max"])}
    if cp.get("w_min"):
        out["w_min_dtod"] = np.std(arr.wmin, ddof=1) / abs(cp["w_min"])
    if "dw_up" in p:                  # in units of the drawn devices' mean step dw
        up, dn = p["dw_up"], p["dw_dn"]
        if card.convention("up_down") == "larger_is_dw_min":
            step, b = np.maximum(up, dn), up - dn
        else:
            step, b = (up + dn) / 2, (up - dn) / 2
        dw = step.mean()
        out.update(dw_min=dw, dw_min_dtod=np.std(step, ddof=1) / dw)
        if card.model != "piecewise":
            out.update(up_down=b.mean() / dw, up_down_dtod=np.std(b, ddof=1) / dw)
    if card.model == "linear_step":
        for k, col in (("gamma_up", "gamma_up"), ("gamma_down", "gamma_dn")):
            out[k], out[k + "_dtod"] = p[col].mean(), np.std(p[col], ddof=1)
    if card.model == "soft_bounds_pmax":
        rel = [p[c] / (cp[k] * cp["p_max"]) for c, k in (("A_up", "A_up"), ("A_dn", "A_down"))]
        out.update(A_up=cp["A_up"] * rel[0].mean(), A_down=cp["A_down"] * rel[1].mean(),
                   A_dtod=math.sqrt(np.mean([np.var(r, ddof=1) for r in rel])),
                   p_max=cp["p_max"])
    if card.model == "pow_step":
        g = p["gamma_up"] / (1 + cp["pow_up_down"])          # symmetric convention
        out.update(pow_gamma=g.mean(), pow_gamma_dtod=np.std(g, ddof=1) / g.mean(),
                   pow_up_down=cp["pow_up_down"])
    if card.model == "exp_step":
        out.update({k: cp[k] for k in ("gamma_up", "gamma_down", "A_up", "A_down")})
    return out


def close(got, want, rel, floor=0.02, absolute=0.01):
    if abs(want) < floor:
        return abs(got - want) <= absolute
    return abs(got - want) <= rel * abs(want)


ASYMMETRIES = ("up_down", "pow_up_down")     # relative differences of two steps: absolute


@pytest.mark.parametrize("model", sorted(CASES))
def test_fit_recovers_the_drawn_devices(tmp_path, model):
    card, path = measure(tmp_path, model)
    fixed = {"w_min": card.w_min, "w_max": card.w_max}
    r = fit_card(path, model, conventions=card.conventions, fixed=fixed, g_range=G_RANGE)
    truth = drawn(card)
    bad = []
    for k, want in truth.items():
        if model == "piecewise" and k == "dw_min":
            continue                   # one product with the nodes: checked below
        spread = k.endswith("_dtod")
        ok = abs(r.params[k] - want) <= 0.01 if k in ASYMMETRIES else \
            close(r.params[k], want, 0.20 if spread else 0.05)
        if not ok:
            bad.append(f"{k}: fitted {r.params[k]:.4g}, drawn {want:.4g}")
    noise = "c2c_sigma" if model == "soft_bounds_pmax" else "dw_min_std"
    if not close(r.params[noise], card.params[noise], 0.10, floor=0):
        bad.append(f"{noise}: fitted {r.params[noise]:.4g}, card {card.params[noise]:.4g}")
    if model == "piecewise":           # dw_min and the nodes are one product
        dw = truth["dw_min"]
        for key in ("piecewise_up", "piecewise_down"):
            got = r.params["dw_min"] * np.array(r.params[key])
            want = dw * np.array(card.params[key])
            if not np.allclose(got, want, rtol=0.05):
                bad.append(f"dw_min x {key}: fitted {got}, drawn {want}")
    assert not bad, f"{model}: " + "; ".join(bad)
    r.card()                                               # a valid card
    assert r.ci["dw_min" if "dw_min" in r.params else "A_up"][0] < \
        r.params["dw_min" if "dw_min" in r.params else "A_up"]


def test_conductance_range_from_the_devices_bounds_and_the_card_file(tmp_path, capsys):
    """Without --g-range the card's range is the mean of the devices' fitted bounds; the CLI
    writes a valid card with the data's SHA-256, the residual and the intervals, a figure
    and the table."""
    import hashlib
    card, path = measure(tmp_path, "linear_step")
    arr = DeviceArray(card, (1, N_DEV), np.random.default_rng(SEED))
    want = card.w_to_g(np.array([arr.wmin.mean(), arr.wmax.mean()]))
    out = tmp_path / "fitted.yaml"
    assert main(["device", "fit", path, "--model", "linear_step", "-o", str(out),
                 "--fix", f"w_min={card.w_min}", "--fix", f"w_max={card.w_max}",
                 "--convention", "up_down=larger_is_dw_min",
                 "--convention", "slope_bound=nominal", "--name", "My ECRAM",
                 "--source", "Lab notebook 7, wafer 3"]) == 0
    fitted = load_card(str(out))
    span = card.g_max_S - card.g_min_S
    assert abs(fitted.g_min_S - want[0]) < 0.02 * span
    assert abs(fitted.g_max_S - want[1]) < 0.02 * span
    assert fitted.name == "My ECRAM" and fitted.source == "Lab notebook 7, wafer 3"
    meta = fitted.metadata["fit"]
    assert meta["data"][0]["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert 0 < meta["residual_rms_S"] < 0.01 * span and meta["devices"] == N_DEV
    assert "dw_min" in meta["confidence_95"]
    for suffix in ("_fit.png", "_fit.md"):
        assert os.path.getsize(str(out).replace(".yaml", suffix)) > 1000
    table = open(str(out).replace(".yaml", "_fit.md"), encoding="utf-8").read()
    assert "| `gamma_down` |" in table and "95 % interval" in table
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["constant_step", "soft_bounds"])
def test_auto_picks_the_generating_model_on_clean_data(tmp_path, model):
    """Noise-free trains (spreads kept): every fittable model is fitted and ranked by BIC;
    the generating one wins (models that contain it, such as linear_step for constant_step,
    fit as well and lose on their extra parameters)."""
    noise = {"dw_min_std": 0.0}
    card, path = measure(tmp_path, model, n_dev=3, cycles=1, **noise)
    r = fit_card(path, "auto", conventions=card.conventions,
                 fixed={"w_min": card.w_min, "w_max": card.w_max}, g_range=G_RANGE)
    assert r.model == model, r.table()
    ranked = [row["model"] for row in r.ranking]
    assert ranked[0] == model and len(ranked) >= 5


def test_noise_split_into_cycle_to_cycle_and_write_noise(tmp_path):
    """Write noise 0.5 dw_min on every read (dominant: the fit runs whole trains) and
    cycle-to-cycle noise 0.3 of each step: the write noise in w units within 10 %, the
    cycle-to-cycle noise within 20 %."""
    card, path = measure(tmp_path, "constant_step", dw_min_std=0.3, write_noise_std=0.5)
    r = fit_card(path, "constant_step", fixed={"w_min": -1.0, "w_max": 1.0}, g_range=G_RANGE)
    sigma_w = r.params["write_noise_std"] * r.params["dw_min"]     # the card's dw_min unit
    assert sigma_w == pytest.approx(0.5 * 0.01, rel=0.1)
    assert r.params["dw_min_std"] == pytest.approx(0.3, rel=0.2)


# ---------------------------------------------------------------- malformed data
GOOD = "device,cycle,pulse,sign,conductance_S\n" + "".join(
    f"a,0,{i},{1 if i else 0},{i + 1}e-06\n" for i in range(6))


@pytest.mark.parametrize("text,row,msg", [
    ("device,pulse,conductance_S\na,0,1e-6\n", 1, r"missing column sign"),
    ("pulse,sign\n0,0\n", 1, r"missing column conductance_S"),
    (GOOD.replace("a,0,3,1,", "a,0,1,1,"), 5, r"pulse index 1 after 2 \(row 4\): the pulse "
     r"index must increase"),
    (GOOD.replace("a,0,2,1,3e-06", "a,0,2,1,nan"), 4, r"conductance_S: 'nan' is not a finite"),
    ("device,cycle,pulse,sign,conductance_S\na,0,0,0,1e-6\n", 2, r"single read"),
    (GOOD.replace("a,0,4,1,", "a,0,4,2,"), 6, r"sign: '2'; use \+1"),
    (GOOD.replace("a,0,4,1,5e-06", "a,0,4,1,5"), 6, r"outside 0 to 1 S"),
    (GOOD.replace("a,0,4,1,5e-06", "a,0,4,1,x"), 6, r"'x' is not a number"),
    ("", None, r"empty file"),
])
def test_malformed_csv_names_the_file_and_row(tmp_path, capsys, text, row, msg):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    where = f"{path}: row {row}: " if row else f"{path}: "
    with pytest.raises(DataError, match=msg) as exc:
        read_pulse_data(str(path))
    assert str(exc.value).startswith(where)
    assert main(["device", "fit", str(path), "-o", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err


def test_data_too_small_and_bad_options(tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text("pulse,sign,conductance_S\n0,0,1e-6\n1,1,2e-6\n")
    with pytest.raises(CrossbarEPError, match="too few"):
        fit_card(str(path), "constant_step")
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    with pytest.raises(CrossbarEPError, match="--model nope: unknown"):
        fit_card(str(good), "nope")
    with pytest.raises(CrossbarEPError, match="--fix gamma_up: not a parameter"):
        fit_card(str(good), "constant_step", fixed={"gamma_up": 0.1})


def test_csv_round_trip_and_gaps(tmp_path):
    """Reads every 3rd pulse (a gap keeps the sign) are simulated pulse by pulse."""
    card = make_card("constant_step", dw_min_std=0.0, dw_min_dtod=0.0, up_down_dtod=0.0,
                     w_max_dtod=0.0, w_min_dtod=0.0)
    rows = [r for r in simulate_trains(card, 1, 1, 60, seed=1) if r[2] % 3 == 0 or r[2] == 61]
    path = str(tmp_path / "gaps.csv")
    write_pulse_csv(path, rows)
    data = read_pulse_data(path)
    assert [t.offsets[:3].tolist() for t in data.trains] == [[3, 6, 9], [1, 3, 6]]
    r = fit_card(data, "constant_step", fixed={"w_min": -1.0, "w_max": 1.0}, g_range=G_RANGE)
    assert r.params["dw_min"] == pytest.approx(0.01, rel=1e-6)
    assert r.params["up_down"] == pytest.approx(0.1, rel=1e-6)

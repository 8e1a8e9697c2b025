"""Device cards and device models against closed forms and sampling statistics."""

import glob
import math
import os

import numpy as np
import pytest
from conftest import REPO

from crossbar_ep.cli import main
from crossbar_ep.devices import DeviceArray, pulse_reference
from crossbar_ep.devices.card import MODELS, card_from_dict, load_card
from crossbar_ep.errors import ConfigError

CARDS = sorted(glob.glob(os.path.join(REPO, "device_models", "*.yaml")))


def card(model, g=(1e-7, 25e-6), faults=None, drift=None, prog=None, **params):
    raw = {"name": "t", "model": model, "source": "test", "g_min_S": g[0], "g_max_S": g[1],
           "params": params}
    for k, v in (("faults", faults), ("drift", drift), ("programming_noise", prog)):
        if v:
            raw[k] = v
    return card_from_dict(raw, "t.yaml")


def one_device(c, w0=0.0, n=1, seed=0):
    return DeviceArray(c, (1, n), np.random.default_rng(seed), w_init=w0)


def run_pulses(arr, sign, count):
    out = []
    for _ in range(count):
        arr.pulse(np.full(arr.shape, sign))
        out.append(arr.w.copy())
    return np.array(out)


# ---------------------------------------------------------------- closed forms
def test_constant_step_staircase_and_bounds():
    c = card("constant_step", dw_min=0.1, w_min=-1.0, w_max=1.0, up_down=0.2)
    arr = one_device(c)
    up = run_pulses(arr, +1, 12)[:, 0]
    expected = np.minimum(0.12 * np.arange(1, 13), 1.0)        # dw_up = dw_min (1 + b)
    np.testing.assert_allclose(up, expected, atol=1e-12)
    down = run_pulses(arr, -1, 30)[:, 0]
    np.testing.assert_allclose(down[:5], 1.0 - 0.08 * np.arange(1, 6), atol=1e-12)
    assert down[-1] == -1.0                                     # clipped at w_min


@pytest.mark.parametrize("A_up,A_down", [(0.4992, -0.2003), (31.567, -1.9973), (0.7021, 0.8487)])
def test_soft_bounds_pmax_exponential_curve(A_up, A_down):
    P = 50
    c = card("soft_bounds_pmax", p_max=P, A_up=A_up, A_down=A_down, w_min=-1.0, w_max=1.0)
    arr = one_device(c, w0=-1.0)
    up = run_pulses(arr, +1, P)[:, 0]
    p = np.arange(1, P + 1)
    A = A_up * P
    B = 2.0 / (1 - math.exp(-P / A))
    np.testing.assert_allclose(up, B * (1 - np.exp(-p / A)) - 1.0, atol=1e-9)
    assert up[-1] == pytest.approx(1.0, abs=1e-9)               # P_max pulses span the range
    down = run_pulses(arr, -1, P)[:, 0]
    Ad = A_down * P
    Bd = 2.0 / (1 - math.exp(-P / Ad))
    np.testing.assert_allclose(down, 1.0 - Bd * (1 - np.exp(-p / Ad)), atol=1e-9)


def test_soft_bounds_geometric_approach():
    c = card("soft_bounds", dw_min=0.05, w_min=-1.0, w_max=1.0)
    arr = one_device(c, w0=0.2)
    up = run_pulses(arr, +1, 40)[:, 0]
    k = np.arange(1, 41)
    np.testing.assert_allclose(1.0 - up, 0.8 * (1 - 0.05) ** k, rtol=1e-10)


@pytest.mark.parametrize("model,extra", [
    ("linear_step", dict(gamma_up=0.4152, gamma_down=0.7342)),
    ("exp_step", dict(a=-0.5, b=-0.5, gamma_up=5.0, gamma_down=5.0, A_up=-1.18445,
                      A_down=-0.081404)),
    ("pow_step", dict(pow_gamma=2.0, pow_up_down=0.3)),
    ("piecewise", dict(piecewise_up=[1.0, 0.6, 0.2], piecewise_down=[0.3, 0.8, 1.0, 1.2])),
])
def test_models_match_plain_python_reference(model, extra):
    c = card(model, dw_min=0.02, w_min=-1.0, w_max=1.0, up_down=0.1, **extra)
    arr = one_device(c, w0=-0.3)
    for sign, n in ((+1, 80), (-1, 120)):
        start = float(arr.w[0])
        got = run_pulses(arr, sign, n)[:, 0]
        np.testing.assert_allclose(got, pulse_reference(c, start, sign * n), atol=1e-10)


def test_bounds_hold_under_noise():
    c = card("linear_step", dw_min=0.05, w_min=-1.0, w_max=1.0, dw_min_std=3.0,
             w_max_dtod=0.3, w_min_dtod=0.3, gamma_up=0.3, gamma_down=0.3)
    arr = DeviceArray(c, (20, 30), np.random.default_rng(1))
    rng = np.random.default_rng(2)
    for _ in range(30):
        arr.pulse(rng.integers(-20, 21, arr.shape))
        assert np.all(arr.w <= arr.wmax) and np.all(arr.w >= arr.wmin)


# ---------------------------------------------------------------- statistics
def test_device_to_device_variation_statistics():
    c = card("constant_step", dw_min=0.01, w_min=-1.0, w_max=1.0, up_down=0.1,
             dw_min_dtod=0.2, up_down_dtod=0.05, w_max_dtod=0.3, w_min_dtod=0.1)
    n = 40000
    arr = DeviceArray(c, (200, 200), np.random.default_rng(3))
    se = 4 / math.sqrt(n)
    assert arr.dw_up.mean() == pytest.approx(0.01 * 1.1, rel=4 * se)
    assert arr.dw_dn.mean() == pytest.approx(0.01 * 0.9, rel=4 * se)
    # dw_up / dw_min - 1 = b + dtod xi  ->  std = sqrt(0.05^2 + 0.2^2)
    assert np.std(arr.dw_up / 0.01) == pytest.approx(math.hypot(0.05, 0.2), rel=0.03)
    assert np.std(arr.wmax) == pytest.approx(0.3, rel=0.03)
    assert np.mean(arr.wmin) == pytest.approx(-1.0, abs=0.01)
    # drawn once: the same seed gives the same devices
    again = DeviceArray(c, (200, 200), np.random.default_rng(3))
    np.testing.assert_array_equal(arr.dw_up, again.dw_up)


def test_cycle_to_cycle_noise_statistics():
    c = card("constant_step", dw_min=0.001, w_min=-10.0, w_max=10.0, dw_min_std=0.5)
    arr = DeviceArray(c, (1, 20000), np.random.default_rng(4))
    arr.pulse(np.ones(arr.shape))
    steps = arr.w
    assert steps.mean() == pytest.approx(0.001, rel=4 * 0.5 / math.sqrt(20000))
    assert steps.std() == pytest.approx(0.0005, rel=0.03)


def test_write_noise_redrawn_per_update():
    c = card("constant_step", dw_min=0.01, w_min=-1.0, w_max=1.0, write_noise_std=10.0)
    arr = DeviceArray(c, (100, 100), np.random.default_rng(5))
    arr.pulse(np.zeros(arr.shape, int))
    s1 = arr.states() - arr.w.reshape(arr.shape)
    assert s1.std() == pytest.approx(0.1, rel=0.05)             # 10 x dw_min
    arr.pulse(np.zeros(arr.shape, int))
    s2 = arr.states() - arr.w.reshape(arr.shape)
    assert abs(np.corrcoef(s1.ravel(), s2.ravel())[0, 1]) < 0.05


def test_stuck_at_faults():
    c = card("constant_step", dw_min=0.01, w_min=-1.0, w_max=1.0,
             faults={"stuck_at_gmin_frac": 0.05, "stuck_at_gmax_frac": 0.02})
    arr = DeviceArray(c, (200, 200), np.random.default_rng(6))
    n = arr.w.size
    for frac, code in ((0.05, 1), (0.02, 2)):
        got = np.mean(arr.stuck == code)
        assert abs(got - frac) < 4 * math.sqrt(frac * (1 - frac) / n)
    before = arr.conductance().ravel()
    applied = arr.pulse(np.full(arr.shape, 3))
    g = arr.conductance().ravel()
    assert applied == 3 * int(np.sum(arr.stuck == 0))
    np.testing.assert_allclose(g[arr.stuck == 1], c.g_min_S)
    np.testing.assert_allclose(g[arr.stuck == 2], c.g_max_S)
    assert np.all(g[arr.stuck == 0] > before[arr.stuck == 0])


def test_drift_power_law():
    c = card("constant_step", dw_min=0.01, w_min=-1.0, w_max=1.0,
             drift={"nu_mean": 0.05, "nu_std": 0.0, "t0_s": 20.0})
    arr = DeviceArray(c, (3, 4), np.random.default_rng(7), w_init=0.5)
    g0 = arr.conductance()
    for t in (1.0, 100.0, 1e5):
        arr.advance(t)
        np.testing.assert_allclose(arr.conductance(),
                                   g0 * ((arr.t_now + 20.0) / 20.0) ** -0.05, rtol=1e-12)
    arr.pulse(np.ones(arr.shape))           # a write restarts the drift clock
    assert np.allclose(arr.conductance(), c.w_to_g(arr.states()))


def test_pcm_drift_exponent_range():
    c = load_card(os.path.join(REPO, "device_models", "pcm_nandakumar2020.yaml"))
    arr = DeviceArray(c, (100, 100), np.random.default_rng(8), w_init=1.0)
    g0 = arr.conductance()
    arr.advance(1e4 - 0.0)
    nu = -np.log(arr.conductance() / g0) / math.log((1e4 + 20) / 20)
    assert 0.03 < np.median(nu) < 0.12


def test_programming_noise_and_clipping():
    c = card("constant_step", dw_min=0.01, w_min=-1.0, w_max=1.0,
             prog={"model": "constant", "std_S": 0.5e-6})
    arr = DeviceArray(c, (200, 200), np.random.default_rng(9))
    arr.program(np.zeros(arr.w.size))
    span_w, span_g = 2.0, 25e-6 - 1e-7
    assert arr.w.std() == pytest.approx(0.5e-6 / span_g * span_w, rel=0.03)
    arr.program(np.full(arr.w.size, 5.0))
    assert np.all(arr.w == arr.wmax)


def test_ideal_device_is_exact():
    c = load_card(os.path.join(REPO, "device_models", "ideal.yaml"))
    arr = DeviceArray(c, (2, 3), np.random.default_rng(0))
    arr.update_exact(np.full((2, 3), 12.5))
    assert np.all(arr.states() == 12.5)
    with pytest.raises(TypeError):
        arr.pulse(np.ones((2, 3)))


# ---------------------------------------------------------------- cards
@pytest.mark.parametrize("path", CARDS, ids=[os.path.basename(p) for p in CARDS])
def test_shipped_cards_load(path):
    c = load_card(path)
    assert c.source.strip() and c.g_max_S > c.g_min_S >= 0


def test_every_model_has_a_card_and_published_states():
    models = {load_card(p).model for p in CARDS}
    assert models >= set(MODELS) - {"pow_step", "piecewise"}
    states = {os.path.basename(p): load_card(p).n_states for p in CARDS}
    assert states["rpu_gokmen2016.yaml"] == pytest.approx(1250)      # "about 1200"
    assert states["rpu_idealised_rasch2019.yaml"] == pytest.approx(10000)
    assert states["neurosim_agasi_jo2010.yaml"] == 97
    g = load_card(os.path.join(REPO, "device_models", "neurosim_taox_hfox_wu2018.yaml"))
    assert g.g_max_S == pytest.approx(1e-5) and g.g_min_S == pytest.approx(1e-6)


def bad(raw):
    with pytest.raises(ConfigError) as e:
        card_from_dict(raw, "dev.yaml")
    return str(e.value)


BASE = {"name": "x", "model": "constant_step", "source": "s", "g_min_S": 1e-7,
        "g_max_S": 2.5e-5, "params": {"dw_min": 0.01, "w_min": -1, "w_max": 1}}


def test_bad_cards():
    assert bad({**BASE, "model": "linear_stp"}) == (
        "dev.yaml: model: unknown model 'linear_stp'; use one of ideal, constant_step, "
        "linear_step, soft_bounds, soft_bounds_pmax, exp_step, pow_step, piecewise; did you "
        "mean 'linear_step'?")
    assert bad({**BASE, "params": {"w_min": -1, "w_max": 1}}) == (
        "dev.yaml: params.dw_min: missing: model constant_step needs it")
    assert bad({**BASE, "params": {**BASE["params"], "dw_min_std": -0.1}}) == (
        "dev.yaml: params.dw_min_std: must not be negative, got -0.1")
    assert bad({**BASE, "g_min_S": 3e-5}) == (
        "dev.yaml: g_min_S: G_min (3e-05 S) must be below G_max (2.5e-05 S)")
    assert bad({**BASE, "params": {**BASE["params"], "gamma_up": 0.1}}) == (
        "dev.yaml: params.gamma_up: not a parameter of model constant_step; (it uses: "
        "dw_min, w_min, w_max, up_down, dw_min_dtod, up_down_dtod, w_max_dtod, w_min_dtod, "
        "dw_min_std, write_noise_std)")
    assert "missing: give a non-empty string citing" in bad({**BASE, "source": ""})
    assert "unknown key; did you mean 'g_max_S'?" in bad({**BASE, "g_max_s": 1})
    assert "give either g_min_S/g_max_S or r_on_ohm" in bad({**BASE, "r_on_ohm": 1e4})
    assert "must be below w_max" in bad({**BASE, "params": {"dw_min": 0.1, "w_min": 1,
                                                             "w_max": 1}})
    assert "fraction in [0, 1]" in bad({**BASE, "faults": {"stuck_at_gmin_frac": 1.5}})


def test_device_cli(tmp_path, capsys):
    path = os.path.join(REPO, "device_models", "ecram_li_tang2018.yaml")
    assert main(["device", "info", path]) == 0
    out = capsys.readouterr().out
    assert "number of states: 1000" in out and "Tang et al." in out and "[w]" in out
    png = tmp_path / "p.png"
    assert main(["device", "plot", path, "--out", str(png), "--pulses", "50"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    bad_card = tmp_path / "bad.yaml"
    bad_card.write_text("name: x\nmodel: nope\nsource: s\n")
    assert main(["device", "info", str(bad_card)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err

"""Device models in a registry, and devices with a clock.

- adding a model is one registered class plus a card (no edits elsewhere);
- each model's step is one plain-Python function: the Numba kernel runs it compiled and
  ``pulse_reference`` un-jitted; both are checked against the published equations written out
  independently here;
- ``ideal`` is one model among them (``pulsed`` False), not a string compared everywhere;
- training advances the devices' clocks, so drift acts on the reads; the clock is in the state.
"""

import glob
import math
import os
import re

import numpy as np
import pytest
import yaml
from conftest import REPO, small_config

from crossbar_ep.cli import main
from crossbar_ep.config.build import batch_seconds
from crossbar_ep.config.docs import render_devices
from crossbar_ep.crossbar.array import CrossbarMatrix
from crossbar_ep.devices import (
    REQUIRED,
    DeviceArray,
    DeviceModel,
    Param,
    model_class,
    model_names,
    pulse_reference,
    register,
    registry,
)
from crossbar_ep.devices import card as device_card
from crossbar_ep.devices.card import card_from_dict, describe, load_card
from crossbar_ep.runs import train

CARDS = sorted(glob.glob(os.path.join(REPO, "device_models", "*.yaml")))


# ---------------------------------------------------------------- adding a model
def test_toy_model_is_one_class_and_a_card(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))   # restored afterwards

    @register
    class FractionStep(DeviceModel):
        """Each pulse covers a fixed fraction of the distance to the bound it moves to."""

        name = "toy_fraction"
        summary = "`frac (w_bound_d - w)`"
        states_key = "frac"
        params = {"frac": Param(REQUIRED, "-", "fraction of the remaining distance per pulse",
                                "pos"),
                  "w_min": Param(-1.0, "w", "lower bound", "any"),
                  "w_max": Param(1.0, "w", "upper bound", "any")}

        @classmethod
        def n_states(cls, p):
            return 1.0 / p["frac"]

        @classmethod
        def constants(cls, card):
            return np.array([card.params["frac"]])

        @staticmethod
        def step(w, d, wmin, wmax, p, c):
            return c[0] * ((wmax - w) if d > 0 else (wmin - w)), 0.0

    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({"name": "toy", "model": "toy_fraction", "source": "a test",
                                    "g_min_S": 1e-6, "g_max_S": 1e-5,
                                    "params": {"frac": 0.1, "w_min": 0.0, "w_max": 2.0}}))
    card = load_card(str(path))
    assert card.model_class is FractionStep and card.pulsed and card.n_states == 10
    arr = DeviceArray(card, (2, 3), np.random.default_rng(0), w_init=0.5)
    traj = []
    for _ in range(15):
        arr.pulse(np.ones((2, 3), int))
        traj.append(arr.w[0])
    k = np.arange(1, 16)
    closed = 2.0 - 1.5 * 0.9 ** k                          # w_k = w_max - (w_max - w0) 0.9^k
    np.testing.assert_allclose(traj, closed, rtol=1e-12)
    np.testing.assert_allclose(pulse_reference(card, 0.5, 15), closed, rtol=1e-12)
    arr.pulse(np.full((2, 3), -4))
    np.testing.assert_allclose(arr.w, closed[-1] * 0.9 ** 4, rtol=1e-12)   # towards w_min 0
    np.testing.assert_allclose(arr.conductance(),
                               1e-6 + arr.w.reshape(2, 3) / 2.0 * 9e-6, rtol=1e-12)
    # the card reference, the docs and the CLI know it with no other edit
    assert "frac" in device_card.PARAMS["toy_fraction"] and "toy_fraction" in model_names()
    assert "| toy_fraction | `frac (w_bound_d - w)` |" in render_devices()
    assert "fraction of the remaining distance per pulse" in describe(card)
    assert main(["device", "info", str(path)]) == 0
    assert "number of states: 10" in capsys.readouterr().out
    bad = {"name": "t", "model": "toy_fraction", "source": "s", "g_min_S": 1e-6,
           "g_max_S": 1e-5, "params": {"frac": 2e-7}}
    with pytest.raises(Exception, match=r"params.frac: gives 5e\+06 device states"):
        card_from_dict(bad, "t.yaml")


def test_registry_drives_card_validation_and_docs():
    assert model_names()[:8] == ("ideal", "constant_step", "linear_step", "soft_bounds",
                                 "soft_bounds_pmax", "exp_step", "pow_step", "piecewise")
    for m in model_names():
        assert device_card.PARAMS[m] is model_class(m).params
        assert f"## `params` of model `{m}`" in render_devices()
    with open(os.path.join(REPO, "docs", "devices.md"), encoding="utf-8") as fh:
        assert fh.read() == render_devices()


# ---------------------------------------------------------------- ideal is a model
def test_ideal_is_a_model_property_not_a_string():
    for path in CARDS:
        card = load_card(path)
        assert card.pulsed == (card.model != "ideal")
    ideal = load_card(os.path.join(REPO, "device_models", "ideal.yaml"))
    assert ideal.model_class.pulsed is False and ideal.n_states == math.inf
    src = "".join(open(p, encoding="utf-8").read()
                  for p in glob.glob(os.path.join(REPO, "crossbar_ep", "**", "*.py"),
                                     recursive=True))
    assert not re.search(r"""model\s*[!=]=\s*["']ideal["']""", src)


# ---------------------------------------------------------------- independent reference
def published(card, w, pulses):
    """The models' published equations, written out independently of crossbar_ep (the
    hand-written reference the code had before the registry): nominal device, no noise."""
    p = card.params
    d = 1 if pulses > 0 else -1
    out = []
    for _ in range(abs(pulses)):
        if card.model == "soft_bounds_pmax":
            rng = p["w_max"] - p["w_min"]
            A = (p["A_up"] if d > 0 else p["A_down"]) * p["p_max"]
            B = rng / (1 - math.exp(-p["p_max"] / A))
            step = ((p["w_min"] + B - w) if d > 0 else -(w - (p["w_max"] - B))) * \
                (1 - math.exp(-1 / A))
        else:
            b = p["up_down"]
            if card.conventions.get("up_down") == "larger_is_dw_min":   # the fits' form
                dw = p["dw_min"] * (1 - abs(b) if d * b < 0 else 1.0)
            else:
                dw = p["dw_min"] * (1 + d * b)
            if card.model == "constant_step":
                step = d * dw
            elif card.model in ("linear_step", "soft_bounds"):
                g = 1.0 if card.model == "soft_bounds" else \
                    abs(p["gamma_up" if d > 0 else "gamma_down"])
                step = d * dw * max(1 - g * w / (p["w_max"] if d > 0 else p["w_min"]), 0)
            elif card.model == "exp_step":
                z = 2 * p["a"] * w / (p["w_max"] - p["w_min"]) + p["b"]
                y = 1 - (p["A_up"] * math.exp(p["gamma_up"] * z) if d > 0
                         else p["A_down"] * math.exp(-p["gamma_down"] * z))
                step = d * dw * max(y, 0)
            elif card.model == "pow_step":
                om = (p["w_max"] - w) / (p["w_max"] - p["w_min"])
                pb = p["pow_up_down"]
                if card.conventions.get("up_down") == "larger_is_dw_min":
                    gam = p["pow_gamma"] * (1 - abs(pb) if d * pb < 0 else 1.0)
                else:
                    gam = p["pow_gamma"] * (1 + d * pb)
                step = dw * om ** gam if d > 0 else -dw * (1 - om) ** gam
            else:  # piecewise
                nodes = np.asarray(p["piecewise_up" if d > 0 else "piecewise_down"])
                xs = np.linspace(p["w_min"], p["w_max"], nodes.size)
                step = d * dw * float(np.interp(w, xs, nodes))
        w = min(max(w + step, p["w_min"]), p["w_max"])
        out.append(w)
    return np.array(out)


def nominal(card):
    """The card with every spread, fault and cycle-to-cycle noise switched off."""
    over = {"variation": 0.0, "stuck_at_gmin_frac": 0.0, "stuck_at_gmax_frac": 0.0}
    for k in ("dw_min_std", "c2c_sigma", "write_noise_std"):
        if k in card.model_class.params:
            over[k] = 0.0
    return load_card(card.path, over)


EXTRA = [("pow_step", dict(pow_gamma=2.0, pow_up_down=0.3, dw_min_dtod=0.3, dw_min_std=0.2)),
         ("piecewise", dict(piecewise_up=[1.0, 0.6, 0.2], piecewise_down=[0.3, 0.8, 1.0, 1.2],
                            dw_min_dtod=0.3, dw_min_std=0.2))]


def extra_card(tmp_path, model, params):
    path = tmp_path / f"{model}.yaml"
    path.write_text(yaml.safe_dump({"name": model, "model": model, "source": "test",
                                    "g_min_S": 1e-7, "g_max_S": 25e-6,
                                    "params": {"dw_min": 0.02, "w_min": -1.0, "w_max": 1.0,
                                               "up_down": 0.1, **params}}))
    return load_card(str(path))


def pulsed_cards(tmp_path):
    cards = [load_card(p) for p in CARDS]
    cards += [extra_card(tmp_path, m, p) for m, p in EXTRA]
    return [nominal(c) for c in cards if c.pulsed]


def test_kernel_and_plain_step_follow_the_published_equations(tmp_path):
    """Every shipped card (and pow_step, piecewise): the Numba kernel, the same step run
    un-jitted (pulse_reference) and the independent published equations agree."""
    for card in pulsed_cards(tmp_path):
        lo, hi = card.w_min, card.w_max
        arr = DeviceArray(card, (1, 1), np.random.default_rng(0), w_init=lo + 0.3 * (hi - lo))
        n = int(min(card.n_states, 300))
        for sign in (+1, -1):
            start = float(arr.w[0])
            got = []
            for _ in range(n):
                arr.pulse(np.full((1, 1), sign))
                got.append(arr.w[0])
            ref = pulse_reference(card, start, sign * n)
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13, err_msg=card.path)
            np.testing.assert_allclose(ref, published(card, start, sign * n), rtol=0,
                                       atol=1e-10, err_msg=card.path)


# ---------------------------------------------------------------- the clock and drift
def drift_card(tmp_path, drift=True):
    raw = {"name": "drifting", "model": "constant_step", "source": "test", "g_min_S": 1e-7,
           "g_max_S": 25e-6, "params": {"dw_min": 0.01, "w_min": -1.0, "w_max": 1.0}}
    if drift:
        raw["drift"] = {"nu_mean": 0.1, "nu_std": 0.0, "t0_s": 20.0}
    path = tmp_path / ("drift.yaml" if drift else "nodrift.yaml")
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def drift_run(tmp_path, card, **xb):
    cfg = small_config(crossbar={"enabled": True, "device": card, "layers": ["W1"],
                                 "update": {"lr": 0.0}, **xb})
    return train.start(cfg, str(tmp_path / "run"))


@pytest.mark.parametrize("drift", [True, False])
def test_training_batches_advance_the_clock_and_drift_acts(tmp_path, drift):
    run = drift_run(tmp_path, drift_card(tmp_path, drift), time_per_batch_s=50.0)
    cb = run.learner.pulses.crossbars["W1"]
    assert cb.seconds_per_update == 50.0
    g0p, g0n, W0 = cb.pos.conductance().copy(), cb.neg.conductance().copy(), cb.W_eff.copy()
    x, y = run.data.x_train[:50], run.data.y_train[:50]
    for _ in range(3):                  # pulse gain 0: no writes, only time passes
        run.learner.train_batch(x, y)
    assert cb.pos.t_now == cb.neg.t_now == 150.0
    if not drift:
        np.testing.assert_array_equal(cb.pos.conductance(), g0p)
        np.testing.assert_array_equal(cb.W_eff, W0)
        return
    f = ((150.0 + 20.0) / 20.0) ** -0.1                    # ((t + t0) / t0) ^ -nu
    np.testing.assert_allclose(cb.pos.conductance(), g0p * f, rtol=1e-12)
    np.testing.assert_allclose(cb.neg.conductance(), g0n * f, rtol=1e-12)
    span = cb.card.g_max_S - cb.card.g_min_S
    expected = cb.scale * (g0p * f - g0n * f) / span    # what the reads now see
    np.testing.assert_allclose(cb.W_eff, expected, rtol=1e-9, atol=1e-12)
    assert not np.allclose(cb.W_eff, W0)


def test_time_per_batch_from_physics(tmp_path):
    run = drift_run(tmp_path, drift_card(tmp_path))
    cfg, cb = run.cfg, run.learner.pulses.crossbars["W1"]
    t = cfg.training
    settle = (t.T + t.K) * cfg.settling.tau_s                  # 14 x 100 ns
    assert cb.seconds_per_update == pytest.approx(settle + 31 * 1e-7)   # 31 pulses x 100 ns
    from dataclasses import replace
    sto = replace(cfg, crossbar=replace(cfg.crossbar, update=replace(
        cfg.crossbar.update, scheme="stochastic", bl=16)))
    assert batch_seconds(sto, cb.card) == pytest.approx(settle + 50 * 16 * 1e-7)
    ideal = load_card(os.path.join(REPO, "device_models", "ideal.yaml"))
    assert batch_seconds(cfg, ideal) == pytest.approx(settle)
    # centered nudging settles two nudged phases; Tiki-Taka adds its transfers (column reads
    # and transfer pulse slots) spread over the updates between them
    cen = replace(cfg, training=replace(t, nudging="centered"))
    assert batch_seconds(cen, cb.card) == pytest.approx(
        (t.T + 2 * t.K) * cfg.settling.tau_s + 31 * 1e-7)
    tt = replace(cfg, crossbar=replace(cfg.crossbar, update=replace(
        cfg.crossbar.update, scheme="tiki_taka", transfer_every=4, transfer_columns=8,
        transfer_max_pulses=2)))
    t_read = cfg.crossbar.periphery.t_read_s
    assert batch_seconds(tt, cb.card) == pytest.approx(
        settle + 31 * 1e-7 + (8 * t_read + 2 * 1e-7) / 4)
    assert batch_seconds(tt, ideal) == pytest.approx(settle + 8 * t_read / 4)


def test_clock_is_in_the_state_dict(tmp_path):
    card = load_card(drift_card(tmp_path))
    W = np.random.default_rng(0).normal(0, 0.3, (5, 4))
    a = CrossbarMatrix(W, card, np.random.default_rng(1))
    a.seconds_per_update = 7.0
    for _ in range(3):
        a.update(np.ones((2, 4)), np.ones((2, 5)), 0.5)
    state = a.state_dict()
    assert float(state["pos:t_now"]) == float(state["neg:t_now"]) == 21.0
    b = CrossbarMatrix(W, card, np.random.default_rng(1))
    b.load_state_dict({k: np.array(v) for k, v in state.items()})
    assert b.pos.t_now == b.neg.t_now == 21.0
    np.testing.assert_array_equal(b.W_eff, a.W_eff)
    a.advance(100.0)
    b.advance(100.0)
    np.testing.assert_array_equal(b.W_eff, a.W_eff)


@pytest.mark.parametrize("scheme", ["deterministic", "stochastic"])
def test_pmax_cards_train(tmp_path, scheme):
    """soft_bounds_pmax cards have no dw_min: pulse rules size updates by the model's mean
    step, (w_max - w_min) / p_max (before: KeyError 'dw_min' on the first update)."""
    card = os.path.join(REPO, "device_models", "neurosim_agasi_jo2010.yaml")
    assert load_card(card).mean_step == pytest.approx(2.0 / 97)
    cfg = small_config(crossbar={"enabled": True, "device": card, "layers": ["W1"],
                                 "update": {"lr": 0.5, "scheme": scheme}})
    run = train.start(cfg, str(tmp_path / "run"))
    run.learner.train_batch(run.data.x_train[:50], run.data.y_train[:50])
    assert run.learner.pulses.take_stats()["W1"]["pulses"] > 0


def test_resume_with_drift_equals_uninterrupted(tmp_path):
    """The devices' clock is part of the checkpoint: a drifting card resumed after epoch 1
    ends with the same conductances as an uninterrupted run."""
    from crossbar_ep.runs import train

    pcm = os.path.join(REPO, "device_models", "pcm_nandakumar2020.yaml")
    xb = {"enabled": True, "device": pcm, "layers": ["W1"], "time_per_batch_s": 30.0}
    over = {"training": {"epochs": 2, "optimizer": "sgd", "lr": 0.05}}
    full = train.start(small_config(**over, crossbar=xb), str(tmp_path / "full"))
    train.fit(full, progress=False)
    part = train.start(small_config(training={**over["training"], "epochs": 1}, crossbar=xb),
                       str(tmp_path / "part"))
    train.fit(part, progress=False)
    resumed = train.resume(str(tmp_path / "part"), epochs=2)
    train.fit(resumed, progress=False)
    a, b = full.net.ops["W1"], resumed.net.ops["W1"]
    assert a.pos.t_now == b.pos.t_now == 2 * 8 * 30.0      # 2 epochs x 8 batches x 30 s
    np.testing.assert_array_equal(a.pos.conductance(), b.pos.conductance())
    np.testing.assert_array_equal(full.net.W["W1"], resumed.net.W["W1"])

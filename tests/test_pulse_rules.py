"""Mixed-precision and Tiki-Taka pulse rules against NumPy references; their state resumes
exactly and their statistics reach the metrics."""

import os
from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO, small_config

from crossbar_ep.crossbar.array import CrossbarMatrix
from crossbar_ep.crossbar.mixed_precision import MixedPrecision
from crossbar_ep.crossbar.tiki_taka import TikiTaka
from crossbar_ep.devices.card import load_card
from crossbar_ep.runs import train

RPU = os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")
IDEAL = os.path.join(REPO, "device_models", "ideal.yaml")
QUIET = {"dw_min_std": 0.0, "dw_min_dtod": 0.0, "up_down_dtod": 0.0, "w_max_dtod": 0.0,
         "w_min_dtod": 0.0}     # constant steps of exactly dw_min: pulses are predictable


def _array(rule, seed=0, shape=(12, 9)):
    rng = np.random.default_rng(seed)
    W0 = 0.3 * rng.standard_normal(shape)
    cb = CrossbarMatrix(W0, load_card(RPU, QUIET), np.random.default_rng(seed + 1),
                        tile_rows=4, tile_cols=5, dtype=np.float64)
    cb.rule, cb.lr = rule, 0.7
    rule.attach(cb)
    return cb


def _signals(rng, n_out, n_in, B=6, amp=0.05):
    return rng.random((B, n_in)), amp * rng.standard_normal((B, n_out))


@pytest.mark.parametrize("mu, theta", [(0.0, 1.0), (0.9, 1.0), (0.0, 2.5)])
def test_mixed_precision_matches_numpy_reference(mu, theta):
    cb = _array(MixedPrecision(max_pulses=3, momentum=mu, threshold=theta))
    assert ("v" in cb.rule_state) == (mu > 0)
    pf = cb.mapping.pulse_factor()
    W_ref, chi_ref, total = cb.W_eff.copy(), np.zeros(cb.shape), np.zeros(cb.shape)
    W_start, v = W_ref.copy(), np.zeros(cb.shape)
    rng = np.random.default_rng(5)
    for _ in range(8):
        pre, delta = _signals(rng, *cb.shape)
        cb.update(pre, delta, 0.5)
        v = mu * v + 0.7 * 0.5 * delta.T @ pre     # momentum 0: v is the update itself
        g = v
        total += g
        chi_ref += g
        n = np.clip(np.where(np.abs(chi_ref * pf) < theta, 0.0, np.trunc(chi_ref * pf)), -3, 3)
        chi_ref -= n / pf
        W_ref += n / pf                  # a pulse pair moves W by one nominal step
        np.testing.assert_array_equal(cb.last_counts, n)
        np.testing.assert_allclose(cb.rule_state["chi"], chi_ref, atol=1e-12)
        np.testing.assert_allclose(cb.W_eff, W_ref, atol=1e-9)
    # nothing is lost: weight change + remainder = the integrated update
    np.testing.assert_allclose(cb.W_eff - W_start + cb.rule_state["chi"], total, atol=1e-9)
    assert cb.last_counts.any() and np.abs(total).max() < 1.0


def test_mixed_precision_threshold_fires_fewer_noise_pulses_and_as_many_drift_pulses():
    """The dead zone theta: an accumulator fed zero-mean noise fires about theta times fewer
    pulses (random-walk exits of +-theta eps come theta^2 times rarer, theta pulses each);
    fed a steady drift it fires the same number, in bursts (at most theta behind)."""
    from crossbar_ep.crossbar.mixed_precision import accumulate_pulses
    rng = np.random.default_rng(0)
    n_dev, steps = 2000, 1500
    noise = 0.3 * rng.standard_normal((steps, n_dev))      # in device steps (factor 1)
    counts = {}
    for theta in (1.0, 4.0):
        for name, g in (("noise", noise), ("drift", np.full((steps, n_dev), 0.07))):
            chi, out, total = np.zeros(n_dev), np.empty(n_dev, np.int64), 0
            for t in range(steps):
                total += accumulate_pulses(chi, g[t], 1.0, -1, out, theta)[0]
            counts[name, theta] = total
            assert np.abs(chi).max() < theta + 1.0       # nothing lost beyond the dead zone
    ratio = counts["noise", 1.0] / counts["noise", 4.0]
    assert 2.5 < ratio < 6.0, ratio
    drift = steps * 0.07 * n_dev
    for theta in (1.0, 4.0):
        assert drift - theta * n_dev <= counts["drift", theta] <= drift


@pytest.mark.parametrize("chopped, forget", [(False, True), (True, True), (False, False),
                                             (True, False)])
def test_tiki_taka_matches_numpy_reference(chopped, forget):
    rule = TikiTaka(rng=np.random.default_rng(3),
                    scheme="chopped_tiki_taka" if chopped else "tiki_taka", max_pulses=None,
                    transfer_every=2, transfer_columns=2, transfer_lr=0.8,
                    transfer_max_pulses=2, chop_prob=0.5, buffer_forget=forget,
                    buffer_momentum=None if forget else 0.3)
    m = (0.0 if chopped else 0.1) if forget else 0.3     # the papers' defaults when None
    cb = _array(rule)
    fast = cb.rule_state["fast"]
    assert fast.scale == cb.scale and np.abs(fast.W_eff).max() < 1e-12
    pf = cb.mapping.pulse_factor()
    C_ref, H_ref = cb.W_eff.copy(), np.zeros(cb.shape)
    col, flips, fired = 0, 0, 0
    rng = np.random.default_rng(6)
    for t in range(1, 15):
        pre, delta = _signals(rng, *cb.shape, amp=0.1)
        chop = cb.rule_state["chop"].copy()
        A_before = fast.W_eff.copy()
        cb.update(pre, delta, 0.5)
        g = 0.7 * 0.5 * delta.T @ (pre * chop if chopped else pre)
        # the fast array took the (chopped) EP update, rounded to whole pulses
        assert np.abs(fast.W_eff - A_before - g).max() <= 1 / pf + 1e-9
        if t % 2 == 0:
            cols = np.array([col, col + 1]) % cb.n_in
            col = (col + 2) % cb.n_in
            H_ref[:, cols] += 0.8 * fast.W_eff[:, cols] * chop[cols]
            n = np.clip(np.trunc(H_ref[:, cols] * pf), -2, 2)
            if forget:
                H_ref[:, cols] = np.where(n != 0, m * H_ref[:, cols], H_ref[:, cols])
            else:
                H_ref[:, cols] -= (1 - m) * n / pf
            C_ref[:, cols] += n / pf
            flips += int(np.sum(cb.rule_state["chop"] != chop))
            fired += int(np.count_nonzero(n))
            assert cb.rule_info["transfer_reads"] == 2
        else:
            assert cb.rule_info["transfer_reads"] == 0
        np.testing.assert_allclose(cb.rule_state["H"], H_ref, atol=1e-9)
        np.testing.assert_allclose(cb.W_eff, C_ref, atol=1e-9)
    assert (flips > 0) == chopped
    assert fired > 0          # transfers fired, so the buffer rule after them was exercised


def _cfg(scheme, epochs, **upd):
    return small_config(model={"hidden": [16, 12]},
                        training={"optimizer": "sgd", "lr": 0.1, "epochs": epochs, "T": 6,
                                  "K": 4},
                        crossbar={"enabled": True, "device": RPU,
                                  "periphery": {"adc_bits": 8, "read_noise": 0.01},
                                  "update": {"scheme": scheme, **upd}})


@pytest.mark.parametrize("scheme, upd", [("mixed_precision", {}),
                                         ("mixed_precision", {"momentum": 0.9}),
                                         ("chopped_tiki_taka", {})])
def test_rule_state_resumes_exactly(tmp_path, scheme, upd):
    full = train.start(_cfg(scheme, 2, **upd), str(tmp_path / "full"))
    train.fit(full, progress=False)
    part = train.start(_cfg(scheme, 1, **upd), str(tmp_path / "part"))
    train.fit(part, progress=False)
    resumed = train.resume(str(tmp_path / "part"), epochs=2)
    train.fit(resumed, progress=False)
    for k in full.net.W:
        np.testing.assert_array_equal(full.net.W[k], resumed.net.W[k])
    a, b = full.net.ops["W0"].rule_state, resumed.net.ops["W0"].rule_state
    for key in (["chi"] + (["v"] if upd else []) if scheme == "mixed_precision" else ["H"]):
        np.testing.assert_array_equal(a[key], b[key])
    row = full.history[-1]
    assert row["pulses_total"] > 0
    if scheme != "mixed_precision":
        st = row["crossbar"]["W1"]
        n_in = full.net.ops["W1"].n_in     # one column per sample of the batch (50)
        assert st["transfer_reads"] == st["updates"] * min(full.cfg.training.batch_size, n_in)
        assert st["fast_pulses"] > 0 and 0.0 <= st["fast_at_bound"] <= 1.0
        assert row["transfer_reads_total"] == sum(v["transfer_reads"]
                                                  for v in row["crossbar"].values())


def test_tiki_taka_statistics_in_traces(tmp_path):
    import h5py
    cfg = _cfg("tiki_taka", 1)
    cfg = replace(cfg, traces=replace(cfg.traces, enabled=True))
    run = train.start(cfg, str(tmp_path / "t"))
    train.fit(run, progress=False)
    with h5py.File(tmp_path / "t" / "traces.h5", "r") as f:
        reads = f["metrics/transfer_reads_total"][:]
        assert f["metrics/transfer_reads_total"].attrs["units"] == "columns"
    assert reads[0] == run.history[0]["transfer_reads_total"] > 0


def test_tiki_taka_reads_cost_energy(tmp_path):
    """The transfer read-outs are reads: the ADC conversions per sample grow by the read
    columns x outputs per batch."""
    rows = {}
    for scheme in ("deterministic", "tiki_taka"):
        cfg = _cfg(scheme, 1)
        cfg = replace(cfg, crossbar=replace(cfg.crossbar, periphery=replace(
            cfg.crossbar.periphery, read_noise=0.0)))
        run = train.start(cfg, str(tmp_path / scheme))
        train.fit(run, progress=False)
        rows[scheme] = run.history[-1]
    per = cfg.crossbar.periphery
    extra = (rows["tiki_taka"]["energy_adc_J"] - rows["deterministic"]["energy_adc_J"])
    n_train = cfg.data.train_subset or 60
    batches = -(-n_train // cfg.training.batch_size)
    outs = 16 + 12 + 10        # one column of W0, W1, Wf read per batch: n_out conversions
    assert extra == pytest.approx(batches * outs * per.e_adc_J / n_train, rel=1e-6)


def test_centered_nudging_on_ideal_crossbar_equals_digital(tmp_path):
    cfg = small_config(model={"hidden": [16, 12]},
                       training={"optimizer": "sgd", "lr": 0.05, "epochs": 1, "T": 6, "K": 4,
                                 "nudging": "centered"})
    digital = train.start(cfg, str(tmp_path / "d"))
    train.fit(digital, progress=False)
    xb = replace(cfg, crossbar=replace(cfg.crossbar, enabled=True, device=IDEAL))
    xbar = train.start(xb, str(tmp_path / "x"))
    train.fit(xbar, progress=False)
    for k in digital.net.W:
        np.testing.assert_allclose(xbar.net.W[k], digital.net.W[k], atol=1e-6)


def test_compare_uses_trained_twin(tmp_path, capsys):
    """compare --twin RUN_DIR takes the digital row from a trained twin's run directory
    (nothing retrained); a twin of another net is refused with the key and the fix."""
    import yaml

    from crossbar_ep.cli import main
    base = {"name": "tinyx",
            "data": {"dataset": "synthetic", "synthetic_features": 20, "synthetic_classes": 4,
                     "synthetic_train": 200, "synthetic_test": 50},
            "model": {"hidden": [16, 12]},
            "training": {"optimizer": "sgd", "lr": 0.1, "epochs": 1, "batch_size": 50, "T": 6,
                         "K": 4}}
    twin = tmp_path / "twin.yaml"
    twin.write_text(yaml.safe_dump({**base, "name": "tinytwin", "training": {
        **base["training"], "momentum": 0.9, "update_norm": "normalised"}}))
    assert main(["run", str(twin), "--out", str(tmp_path / "t"), "--quiet"]) == 0
    exp = tmp_path / "x.yaml"
    exp.write_text(yaml.safe_dump({**base, "crossbar": {
        "enabled": True, "device": RPU, "update": {"scheme": "mixed_precision"}}}))
    hist = yaml.safe_load((tmp_path / "t" / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["compare", str(exp), "--out", str(tmp_path / "c"), "--quiet", "--twin",
                 str(tmp_path / "t")]) == 0
    text = capsys.readouterr().out
    assert f"| digital | digital ({tmp_path / 't'}) | {100 * hist[0]['test_acc']:.2f} |" in text
    assert not (tmp_path / "c" / "digital").exists()
    bad = tmp_path / "y.yaml"
    bad.write_text(yaml.safe_dump({**base, "model": {"hidden": [8]}, "crossbar": {
        "enabled": True, "device": RPU}}))
    assert main(["compare", str(bad), "--out", str(tmp_path / "d"), "--quiet", "--twin",
                 str(tmp_path / "t")]) == 2
    assert "model.hidden" in capsys.readouterr().err


def test_every_scheme_has_one_rule_class_reading_the_settings():
    from crossbar_ep.crossbar.rules import RULES, make_rule
    from crossbar_ep.crossbar.update_settings import SCHEMES, UpdateSettings
    assert sorted(RULES) == sorted(SCHEMES)
    for scheme in SCHEMES:
        u = UpdateSettings(scheme=scheme, max_pulses=7)
        rule = make_rule(u, np.random.default_rng(0))
        assert rule.settings is u and rule.max_pulses == 7 and scheme in rule.schemes
    with pytest.raises(ValueError, match="not 'stochastic'"):
        MixedPrecision(scheme="stochastic")


def test_momentum_only_with_mixed_precision():
    from crossbar_ep.errors import ConfigError
    with pytest.raises(ConfigError, match="crossbar.update.momentum"):
        _cfg("deterministic", 1, momentum=0.9)
    assert _cfg("mixed_precision", 1, momentum=0.9).crossbar.update.momentum == 0.9


def test_tiki_taka_learns_with_one_column_per_sample(tmp_path):
    """The default transfer rate (one fast-array column per sample of the batch, the papers'
    rate) learns the small task; one column per mini-batch update leaves most columns unread
    and stays near chance (measured 0.19-0.22 after 4 epochs on both cards)."""
    li = os.path.join(REPO, "device_models", "ecram_li_tang2018.yaml")
    acc = {}
    for cols in (None, 1):
        cfg = small_config(model={"hidden": [16, 12]},
                           training={"optimizer": "sgd", "lr": 0.1, "epochs": 4, "T": 6,
                                     "K": 4},
                           crossbar={"enabled": True, "device": li,
                                     "periphery": {"adc_bits": 8, "read_noise": 0.01},
                                     "update": {"scheme": "tiki_taka",
                                                "transfer_columns": cols}})
        run = train.start(cfg, str(tmp_path / str(cols)))
        train.fit(run, progress=False)
        acc[cols] = max(h["test_acc"] for h in run.history)
    assert acc[None] > 0.5 > 0.3 > acc[1], acc


def test_an_update_that_fires_no_pulse_touches_no_device(tmp_path):
    """All-zero counts leave every device as it was: no write noise redrawn, the read
    operands kept (the refresh skipped); a pulse redraws the write noise; a drifting card's
    clock still moves the weights without a pulse."""
    from test_device_registry import drift_card
    rng = np.random.default_rng(3)
    W0 = 0.3 * rng.standard_normal((12, 9))
    card = load_card(RPU, {**QUIET, "write_noise_std": 0.5})
    cb = CrossbarMatrix(W0, card, np.random.default_rng(4), tile_rows=4, tile_cols=5,
                        dtype=np.float64)
    cb.rule, cb.lr = MixedPrecision(threshold=1e6), 0.7
    cb.rule.attach(cb)
    W, noise = cb.W_eff.copy(), cb.pos.write_noise.copy()
    pre, delta = _signals(rng, 12, 9)
    cb.update(pre, delta, 0.5)
    assert not cb.last_counts.any() and cb.last_program_J == 0.0
    np.testing.assert_array_equal(cb.W_eff, W)
    np.testing.assert_array_equal(cb.pos.write_noise, noise)
    cb.rule = MixedPrecision(threshold=1.0)
    cb.rule.attach(cb)
    cb.update(pre, 20 * delta, 0.5)
    assert cb.last_counts.any() and cb.last_program_J > 0.0
    assert not np.array_equal(cb.pos.write_noise, noise)
    assert not np.array_equal(cb.W_eff, W)
    # drift: no pulse, but the clock moves and the weights follow
    d = CrossbarMatrix(W0, load_card(drift_card(tmp_path)), np.random.default_rng(4))
    d.rule, d.lr, d.seconds_per_update = MixedPrecision(threshold=1e6), 0.7, 100.0
    d.rule.attach(d)
    Wd = d.W_eff.copy()
    d.update(pre, delta, 0.5)
    assert not d.last_counts.any()
    assert np.abs(d.W_eff).sum() < np.abs(Wd).sum()       # drift shrinks |G+ - G-|

"""In-situ EP training on the crossbar backend."""

import os
from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO, small_config

from crossbar_ep.crossbar.array import CrossbarMatrix
from crossbar_ep.crossbar.pulses import coincidence_counts
from crossbar_ep.devices.card import load_card
from crossbar_ep.runs import train

IDEAL = os.path.join(REPO, "device_models", "ideal.yaml")
RPU = os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")


def sgd(**xb):
    return small_config(model={"hidden": [24, 16, 12], "residual": "none"},
                        training={"optimizer": "sgd", "lr": 0.05, "epochs": 2},
                        crossbar=xb)


def test_ideal_card_reproduces_digital_sgd(tmp_path):
    digital = train.start(sgd(), str(tmp_path / "d"))
    train.fit(digital, progress=False)
    xbar = train.start(sgd(enabled=True, device=IDEAL, tile_rows=7, tile_cols=5),
                       str(tmp_path / "x"))
    assert set(xbar.learner.pulses.crossbars) == {"W0", "W1", "W2", "Wf"}
    train.fit(xbar, progress=False)
    for k in digital.net.W:
        np.testing.assert_allclose(xbar.net.W[k], digital.net.W[k], atol=1e-9)
    assert [r["test_acc"] for r in xbar.history] == [r["test_acc"] for r in digital.history]


def test_mixed_precision_momentum_on_the_ideal_card_is_digital_sgd_momentum(tmp_path):
    """crossbar.update.momentum keeps the digital velocity of training.momentum: on the ideal
    card the mixed-precision run with momentum is the digital SGD-momentum run."""
    def cfg(**xb):
        c = sgd(**xb)
        return replace(c, training=replace(c.training, momentum=0.8))
    digital = train.start(cfg(), str(tmp_path / "d"))
    train.fit(digital, progress=False)
    xbar = train.start(cfg(enabled=True, device=IDEAL, tile_rows=7, tile_cols=5,
                           update={"scheme": "mixed_precision", "momentum": 0.8}),
                       str(tmp_path / "x"))
    train.fit(xbar, progress=False)
    for k in digital.net.W:
        np.testing.assert_allclose(xbar.net.W[k], digital.net.W[k], atol=1e-6)
    plain = train.start(sgd(enabled=True, device=IDEAL, tile_rows=7, tile_cols=5,
                            update={"scheme": "mixed_precision"}), str(tmp_path / "p"))
    train.fit(plain, progress=False)
    assert max(np.abs(plain.net.W[k] - digital.net.W[k]).max() for k in digital.net.W) > 1e-3


def test_lr_schedule_scales_the_pulse_gain(tmp_path):
    """training.lr_schedule: cosine acts on the arrays' pulse gain as on digital rates: the
    ideal-card run is the digital cosine-schedule run, and the gain after the last epoch is
    the schedule's value."""
    def cfg(**xb):
        c = sgd(**xb)
        return replace(c, training=replace(c.training, lr_schedule="cosine", lr_min=0.0,
                                           epochs=3))
    digital = train.start(cfg(), str(tmp_path / "d"))
    train.fit(digital, progress=False)
    xbar = train.start(cfg(enabled=True, device=IDEAL, tile_rows=7, tile_cols=5),
                       str(tmp_path / "x"))
    train.fit(xbar, progress=False)
    for k in digital.net.W:
        np.testing.assert_allclose(xbar.net.W[k], digital.net.W[k], atol=1e-9)
    assert xbar.net.ops["W1"].lr == pytest.approx(0.05 * 0.5 * (1 + np.cos(np.pi * 2 / 3)))
    c = cfg(enabled=True, device=IDEAL, tile_rows=7, tile_cols=5)
    const = train.start(replace(c, training=replace(c.training, lr_schedule="constant")),
                        str(tmp_path / "c"))
    train.fit(const, progress=False)     # the schedule really changed the arrays' updates
    assert max(np.abs(const.net.W[k] - xbar.net.W[k]).max() for k in xbar.net.W) > 1e-5


def test_ideal_card_with_fine_periphery_tracks_digital(tmp_path):
    """The read-by-read path (periphery in the loop) with a negligible ADC step agrees."""
    digital = train.start(sgd(), str(tmp_path / "d"))
    train.fit(digital, progress=False)
    fine = {"adc_bits": 24, "adc_range": 20.0}
    xbar = train.start(sgd(enabled=True, device=IDEAL, tile_rows=7, tile_cols=5,
                           periphery=fine), str(tmp_path / "x"))
    assert xbar.learner.settler.map.read_layers == {1, 2, 3}
    train.fit(xbar, progress=False)
    for k in digital.net.W:
        np.testing.assert_allclose(xbar.net.W[k], digital.net.W[k], atol=1e-4)


def test_real_device_learns_and_records_pulses(tmp_path):
    cfg = sgd(enabled=True, device=RPU, layers=["W1", "W2", "Wf"],
              periphery={"dac_bits": 7, "adc_bits": 9, "read_noise": 0.01},
              update={"lr": 0.2})
    cfg = replace(cfg, training=replace(cfg.training, epochs=3))
    run = train.start(cfg, str(tmp_path / "r"))
    s = train.fit(run, progress=False)
    assert s["best_test_acc"] > 0.6          # chance is 0.25; digital SGD: about 0.52
    row = run.history[-1]
    assert row["pulses_total"] > 0 and 0.0 <= row["at_bound_mean"] <= 1.0
    assert set(row["crossbar"]) == {"W1", "W2", "Wf"}


def test_crossbar_resume_equals_uninterrupted(tmp_path):
    over = dict(enabled=True, device=RPU, periphery={"adc_bits": 8, "read_noise": 0.01})
    cfg = small_config(training={"optimizer": "sgd", "lr": 0.05, "epochs": 2}, crossbar=over)
    full = train.start(cfg, str(tmp_path / "full"))
    train.fit(full, progress=False)
    part = train.start(small_config(training={"optimizer": "sgd", "lr": 0.05, "epochs": 1},
                                    crossbar=over), str(tmp_path / "part"))
    train.fit(part, progress=False)
    resumed = train.resume(str(tmp_path / "part"), epochs=2)
    train.fit(resumed, progress=False)
    for k in full.net.W:
        np.testing.assert_array_equal(full.net.W[k], resumed.net.W[k])


def test_stochastic_coincidence_mean_update():
    """E[update] = lr * x * delta within sampling error, for one sample."""
    card = load_card(RPU)
    W = np.full((3, 4), 0.05)
    cb = CrossbarMatrix(W, card, np.random.default_rng(0), dtype=np.float64)
    x = np.array([[0.9, -0.5, 0.2, 0.0]])
    delta = np.array([[0.3, -0.8, 0.05]])
    lr = 0.002                                  # probabilities stay below 1 (no clipping)
    step_w = card.params["dw_min"] * 2 * cb.scale / (card.w_max - card.w_min)
    rng = np.random.default_rng(1)
    trials = 4000
    total = np.zeros((3, 4))
    for _ in range(trials):
        total += coincidence_counts(cb, x, delta, lr, 31, True, rng)
    mean_update = total / trials * step_w
    expected = lr * delta[0][:, None] * x[0][None, :]
    # binomial sampling error of the mean count
    err = np.sqrt(np.maximum(np.abs(expected) / step_w, 1e-9) / trials) * step_w
    assert np.all(np.abs(mean_update - expected) <= 5 * err + 1e-12)
    assert np.all(total[:, 3] == 0)                          # x = 0: no coincidences


def test_stochastic_scheme_trains(tmp_path):
    cfg = small_config(model={"hidden": [16]}, training={"optimizer": "sgd", "epochs": 2,
                                                         "T": 4, "K": 4},
                       crossbar={"enabled": True, "device": RPU,
                                 "update": {"scheme": "stochastic", "lr": 0.1, "bl": 15}})
    run = train.start(cfg, str(tmp_path / "s"))
    s = train.fit(run, progress=False)
    assert s["best_test_acc"] > 0.5 and run.history[-1]["pulses_total"] > 0


def test_crossbar_config_errors():
    from crossbar_ep.errors import ConfigError
    with pytest.raises(ConfigError, match=r"crossbar.device: missing"):
        small_config(crossbar={"enabled": True})
    with pytest.raises(ConfigError, match=r"crossbar.layers\[0\]: no matrix 'W7'"):
        small_config(crossbar={"enabled": True, "device": IDEAL, "layers": ["W7"]})
    with pytest.raises(ConfigError, match=r"crossbar.enabled: crossbar training is in situ EP"):
        small_config(training={"algorithm": "bp"}, crossbar={"enabled": True, "device": IDEAL})
    with pytest.raises(ConfigError, match=r"crossbar.periphery.adc_bits: must be >= 2"):
        small_config(crossbar={"periphery": {"adc_bits": 1}})
    for k, v in (("momentum", 0.5), ("threshold", 4.0)):   # mixed precision's own settings
        with pytest.raises(ConfigError, match=rf"crossbar.update.{k}: .*scheme deterministic"):
            small_config(crossbar={"enabled": True, "device": IDEAL, "update": {k: v}})
    with pytest.raises(ConfigError, match=r"crossbar.update.threshold: must be >= 1"):
        small_config(crossbar={"update": {"scheme": "mixed_precision", "threshold": 0.5}})


def test_compare_cli(tmp_path, capsys):
    import yaml

    from crossbar_ep.cli import main
    exp = tmp_path / "x.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "tinyx",
        "data": {"dataset": "synthetic", "synthetic_features": 20, "synthetic_classes": 4,
                 "synthetic_train": 300, "synthetic_test": 100},
        "model": {"hidden": [16, 12]},
        "training": {"optimizer": "sgd", "lr": 0.1, "epochs": 2, "batch_size": 50, "T": 6,
                     "K": 4},
        "crossbar": {"enabled": True, "device": IDEAL}}))
    out = tmp_path / "cmp"
    assert main(["compare", str(exp), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "| digital |" in text and "| crossbar |" in text
    for f in ("compare.md", "compare.csv", "compare.png", "digital/metrics.csv",
              "crossbar/metrics.csv"):
        assert (out / f).exists(), f
    rows = (out / "compare.csv").read_text().splitlines()
    dig, xb = rows[1].split(","), rows[2].split(",")
    assert dig[2] == xb[2]                   # ideal card: same best accuracy as digital SGD
    # running it again resumes (nothing left to do) instead of failing
    assert main(["compare", str(exp), "--out", str(out), "--quiet"]) == 0
    # several cards against one digital twin, which is resumed rather than retrained
    assert main(["compare", str(exp), "--out", str(out), "--quiet", "--device", IDEAL,
                 "--device", RPU]) == 0
    cap = capsys.readouterr()
    assert "| crossbar-ideal | ideal.yaml |" in cap.out
    assert "| crossbar-rpu_gokmen2016 |" in cap.out
    assert "digital: resuming" in cap.err
    rows = (out / "compare.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["digital", "crossbar-ideal",
                                                   "crossbar-rpu_gokmen2016"]
    assert rows[1].split(",")[2] == rows[2].split(",")[2]
    assert main(["compare", str(exp), "--out", str(out), "--quiet", "--device",
                 str(tmp_path / "missing.yaml")]) == 2
    exp.write_text(exp.read_text().replace("enabled: true", "enabled: false"))
    assert main(["compare", str(exp), "--out", str(tmp_path / "c2"), "--quiet"]) == 2


def test_weight_range_factor_per_matrix(tmp_path):
    """crossbar.weight_range_factor as a list sets each matrix's scale S = factor x its
    largest initial |W| (the readout wider here), and a wrong length is a config error."""
    run = train.start(sgd(enabled=True, device=RPU, weight_range_factor=[2.0, 2.0, 3.0, 5.0]),
                      str(tmp_path / "x"))
    init = train.start(sgd(), str(tmp_path / "d")).net.W     # same seed: the same Glorot draw
    cbs = run.learner.pulses.crossbars
    for name, f in (("W0", 2.0), ("W1", 2.0), ("W2", 3.0), ("Wf", 5.0)):
        assert cbs[name].scale == pytest.approx(f * np.abs(init[name]).max())
    from crossbar_ep.errors import ConfigError
    with pytest.raises(ConfigError, match=r"crossbar.weight_range_factor: has 2 values; give "
                                          r"one value or 4"):
        sgd(enabled=True, device=RPU, weight_range_factor=[2.0, 4.0])


def test_converter_error_measurement_runs_on_a_crossbar_run(tmp_path, capsys):
    """benchmarks/converter_error.py on a small crossbar run: a nonzero update error per
    array for the converters, and a tighter ADC full scale clips more tile outputs."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "converter_error", os.path.join(REPO, "benchmarks", "converter_error.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = sgd(enabled=True, device=RPU, tile_rows=8, tile_cols=8,
              periphery={"dac_bits": 5, "adc_bits": 6, "read_noise": 0.01})
    d = str(tmp_path / "r")
    train.fit(train.start(replace(cfg, training=replace(cfg.training, epochs=1)), d),
              progress=False)
    mod.main([d, "--samples", "40", "--adc-sigmas", "4", "1"])
    out = capsys.readouterr().out
    rows = {ln[:34].strip(): [float(v) for v in ln[34:].split()]
            for ln in out.splitlines() if ln[:34].strip().startswith(("DAC", "ADC", "all"))}
    assert len(rows["DAC + ADC, 4 sigma"]) == 4 and min(rows["DAC + ADC, 4 sigma"]) > 0
    clip = {ln.split(":")[0]: ln for ln in out.splitlines() if ln.startswith("adc_sigmas")}
    assert set(clip) == {"adc_sigmas 4", "adc_sigmas 1"}
    # a full scale of one sigma clips more tile outputs than four sigma
    frac = {k: sum(float(t.split()[-1]) for t in v.split(": ")[1].split(", "))
            for k, v in clip.items()}
    assert frac["adc_sigmas 1"] > frac["adc_sigmas 4"]

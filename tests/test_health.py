"""Runs that stop learning say so, with the likely cause read from the evidence: collapse at
chance (the learning rate), divergence through a device card, a checkpoint holding NaN
(docs/limits.md, "Divergence and collapse")."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO, small_config

from crossbar_ep.cli import main
from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.runs import train
from crossbar_ep.runs.health import DivergenceError


def test_sgd_at_the_largest_learning_rate_is_reported_as_collapse(tmp_path, capsys):
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump(small_config(training={
        "epochs": 2, "optimizer": "sgd", "lr": 1000}).to_dict()))      # the schema's maximum
    d = tmp_path / "r"
    assert main(["run", str(exp), "--out", str(d), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "training has collapsed (since epoch 1)" in \
        captured.err
    assert "is chance (1/4)" in captured.err
    assert "likely cause: the weights grew" in captured.err and "training.lr = 1000" in \
        captured.err
    rows = json.loads((d / "metrics.json").read_text())
    assert "collapse" not in rows[0]              # one epoch at chance may be a slow start
    assert "the learning rate" in rows[1]["collapse"]
    assert "WARNING: training collapsed" in (d / "summary.txt").read_text()
    assert "WARNING: training collapsed" in captured.out


def test_a_one_epoch_run_at_chance_is_reported_at_its_end(tmp_path, capsys):
    run = train.start(small_config(training={"epochs": 1, "optimizer": "sgd", "lr": 1000}),
                      str(tmp_path / "r"))
    train.fit(run, progress=False)
    assert "training has collapsed (since epoch 1)" in run.history[0]["collapse"]


def test_a_healthy_run_has_no_collapse_entry(tmp_path):
    run = train.start(small_config(training={"epochs": 2}), str(tmp_path / "r"))
    train.fit(run, progress=False)
    assert run.history[-1]["test_acc"] > 0.5
    assert not any("collapse" in r for r in run.history)


def test_collapse_evidence_and_causes():
    from crossbar_ep.runs.health import collapse_text

    run = train.setup(small_config(), "unused")
    base = {"epoch": 1, "test_acc": 0.25, "train_loss": 1.0}
    assert collapse_text(run, {**base, "test_acc": 0.6}, {"output_std": 0.0}, {}) is None
    assert collapse_text(run, base, {"output_std": 0.3, "top_class_share": 0.4}, {}) is None
    flat = collapse_text(run, {**base, "train_loss": np.log(4)}, {"output_std": 0.3}, {})
    assert "stuck at ln(4)" in flat
    pinned = collapse_text(run, {**base, "at_bound_mean": 0.9}, {"top_class_share": 1.0}, {})
    assert "one class is predicted for 100.0 %" in pinned
    assert "sit at their conductance bounds (at_bound_mean 0.90)" in pinned
    silent = collapse_text(run, {**base, "ds_L1": 0.0, "ds_L2": 1e-9}, {"output_std": 0.0}, {})
    assert "the nudge reaches no hidden layer" in silent


def test_divergence_through_the_device_card_is_blamed_on_the_card(tmp_path, capsys):
    src = os.path.join(REPO, "device_models", "reram_gong2018_softbounds.yaml")
    card = tmp_path / "card.yaml"
    text = open(src, encoding="utf-8").read()
    assert "write_noise_std: 56.0" in text
    card.write_text(text.replace("write_noise_std: 56.0", "write_noise_std: 1.0e300"))
    exp = tmp_path / "e.yaml"
    raw = small_config(training={"epochs": 2, "optimizer": "sgd", "lr": 0.1}).to_dict()
    raw["crossbar"].update(enabled=True, device=str(card))
    exp.write_text(yaml.safe_dump(raw))
    rc = main(["run", str(exp), "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    if "diverged" in err:
        assert f"likely cause: the device card {card}" in err and "write_noise_std" in err
        assert "likely cause: the learning rate" not in err, err
    else:                    # a card range check refuses the value at load: as good
        assert "write_noise_std" in err and str(card) in err, err


def test_a_checkpoint_holding_nan_is_refused_with_a_hint_that_works(tmp_path, capsys):
    d = tmp_path / "r"
    run = train.start(small_config(training={"epochs": 2}), str(d))

    def stop(row):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train.fit(run, progress=False, on_epoch=stop)
    run.lock.release()
    ck = d / "checkpoint.npz"
    with np.load(ck) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["W:W1"] = arrays["W:W1"].copy()
    arrays["W:W1"][0, 0] = np.nan
    np.savez(ck, **arrays)                         # a valid file (CRCs match) holding NaN
    before = ck.read_bytes()
    rc = main(["run", "--resume", str(d), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "W:W1 holds 1 NaN or inf value" in err and "damaged" in err, err
    assert "learning rate" not in err and "Traceback" not in err
    assert ck.read_bytes() == before
    cmd = err.split("from its config: ")[1].strip()
    assert cmd == f"crossbar-ep run {d}/config.yaml --out {d} --overwrite"
    done = subprocess.run([sys.executable, "-m", "crossbar_ep.cli", *cmd.split()[1:],
                           "--quiet"], env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert train.resume(str(d), record=False).epochs_done == 2


def test_divergence_error_is_a_user_error():
    assert issubclass(DivergenceError, CrossbarEPError)       # the CLI: message, exit 2
    assert train.DivergenceError is DivergenceError

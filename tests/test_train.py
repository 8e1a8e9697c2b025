import csv
import json
import os

import numpy as np
import pytest
import yaml
from conftest import REPO, small_config

from crossbar_ep.cli import main
from crossbar_ep.errors import CheckpointError
from crossbar_ep.runs import train


def _weights(run):
    return {k: v.copy() for k, v in run.net.W.items()}


def test_same_seed_same_weights(tmp_path):
    cfg = small_config()
    a = train.start(cfg, str(tmp_path / "a"))
    train.fit(a, progress=False)
    b = train.start(cfg, str(tmp_path / "b"))
    train.fit(b, progress=False)
    for k in a.net.W:
        np.testing.assert_array_equal(a.net.W[k], b.net.W[k])
    c = train.start(small_config(training={"seed": 4}), str(tmp_path / "c"))
    train.fit(c, progress=False)
    assert not np.array_equal(a.net.W["W0"], c.net.W["W0"])


@pytest.mark.parametrize("algorithm,optimizer", [("ep", "adam"), ("ep", "sgd"), ("bp", "adam")])
def test_resume_equals_uninterrupted(tmp_path, algorithm, optimizer):
    over = {"training": {"epochs": 3, "algorithm": algorithm, "optimizer": optimizer,
                         "momentum": 0.5, "lr": 0.005 if optimizer == "adam" else 0.05}}
    cfg = small_config(**over)
    full = train.start(cfg, str(tmp_path / "full"))
    train.fit(full, progress=False)
    # "crash" after epoch 1: a run configured for 1 epoch, then resumed to 3
    part = train.start(small_config(training={**over["training"], "epochs": 1}),
                       str(tmp_path / "part"))
    train.fit(part, progress=False)
    resumed = train.resume(str(tmp_path / "part"), epochs=3)
    assert resumed.epochs_done == 1
    train.fit(resumed, progress=False)
    for k in full.net.W:
        np.testing.assert_array_equal(full.net.W[k], resumed.net.W[k])
    assert [r["test_acc"] for r in full.history] == [r["test_acc"] for r in resumed.history]


def test_interrupted_run_keeps_checkpoint(tmp_path):
    cfg = small_config(training={"epochs": 4})
    run = train.start(cfg, str(tmp_path / "r"))
    calls = []

    def boom(row):
        calls.append(row)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit(run, progress=False, on_epoch=boom)
    again = train.resume(str(tmp_path / "r"))
    assert again.epochs_done == 2
    assert not [f for f in os.listdir(tmp_path / "r") if f.startswith(".tmp-")]
    train.fit(again, progress=False)
    assert again.epochs_done == 4


def test_resume_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a run directory"):
        train.resume(str(tmp_path))
    cfg = small_config()
    run = train.start(cfg, str(tmp_path / "r"))
    with pytest.raises(CheckpointError, match="stopped before its first epoch"):
        train.resume(str(tmp_path / "r"))
    train.fit(run, progress=False)
    with pytest.raises(CheckpointError, match="already holds a run; use --resume"):
        train.start(cfg, str(tmp_path / "r"))


def test_ep_and_bp_learn_synthetic(tmp_path):
    for alg in ("ep", "bp"):
        run = train.start(small_config(training={"algorithm": alg, "epochs": 3}),
                          str(tmp_path / alg))
        s = train.fit(run, progress=False)
        assert s["best_test_acc"] > 0.9, (alg, s)


def test_bp_twin_shares_init(tmp_path):
    ep = train.setup(small_config(), str(tmp_path))
    bp = train.setup(small_config(training={"algorithm": "bp"}), str(tmp_path))
    for k in ep.net.W:
        np.testing.assert_array_equal(ep.net.W[k], bp.net.W[k])


def test_cli_run_writes_run_directory(tmp_path, capsys):
    exp = tmp_path / "tiny.yaml"
    raw = {"name": "tiny", "data": {"dataset": "synthetic", "synthetic_features": 20,
                                    "synthetic_classes": 4, "synthetic_train": 300,
                                    "synthetic_test": 100},
           "model": {"hidden": [16, 16]}, "training": {"epochs": 5, "batch_size": 50, "T": 6,
                                                       "K": 4, "lr": 0.01}}
    exp.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(out), "--epochs", "2", "--quiet",
                 "--set", "training.seed=5"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("tiny [ep]: best test") and str(out) in line
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["training"]["epochs"] == 2 and resolved["training"]["seed"] == 5
    assert resolved["settling"]["mode"] == "discrete"  # defaults filled in
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    js = json.load(open(out / "metrics.json"))
    for k in ("train_loss", "train_acc", "test_acc", "epoch_time_s", "samples_per_s",
              "settle_residual", "settle_steps"):
        assert k in js[-1]
    assert js[-1]["settle_steps"] == 6.0
    assert (out / "summary.txt").read_text().startswith("tiny [ep]")
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["run", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    assert len(json.load(open(out / "metrics.json"))) == 3
    assert main(["run", str(exp), "--resume", str(out)]) == 2


def test_real_mnist_short_run_learns(tmp_path):
    from crossbar_ep.io.data import locate
    if locate("mnist", None)[0] is None:
        pytest.skip("MNIST not available (set CROSSBAR_EP_DATA)")
    cfg_path = os.path.join(REPO, "experiments", "quickstart.yaml")
    from crossbar_ep.config.experiment import load_config
    cfg = load_config(cfg_path, ["training.epochs=1", "data.train_subset=3000",
                                 "data.test_subset=1000"])
    run = train.start(cfg, str(tmp_path / "q"))
    s = train.fit(run, progress=False)
    assert s["best_test_acc"] > 0.80  # chance is 0.10


def test_ctrl_c_inside_a_compiled_kernel_is_an_interrupt(tmp_path, capsys, monkeypatch):
    """A Ctrl-C landing while a Numba kernel returns surfaces as SystemError caused by the
    KeyboardInterrupt (seen on conv runs); `run` treats it as the interrupt it is."""
    from crossbar_ep.errors import interrupts
    with pytest.raises(KeyboardInterrupt):
        with interrupts():
            raise SystemError("im2col_nb returned a result with an exception set") \
                from KeyboardInterrupt()
    with pytest.raises(SystemError):          # any other SystemError is a bug: it propagates
        with interrupts():
            raise SystemError("something else")
    exp = tmp_path / "tiny.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"dataset": "synthetic", "synthetic_features": 20,
                                 "synthetic_classes": 4, "synthetic_train": 100,
                                 "synthetic_test": 50},
        "model": {"hidden": [8]}, "training": {"epochs": 2, "batch_size": 50, "T": 4, "K": 2}}))

    def fit(run, **kw):
        raise SystemError("kernel returned a result with an exception set") \
            from KeyboardInterrupt()

    monkeypatch.setattr(train, "fit", fit)
    assert main(["run", str(exp), "--out", str(tmp_path / "r"), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "interrupted after epoch 0" in err and "Traceback" not in err

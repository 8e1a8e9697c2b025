"""Failure behaviour of training runs: full disk and unwritable run folders, divergence, and trace
readers that coexist with a running training."""

import errno
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import REPO, small_config

from crossbar_ep.cli import main
from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.io import traces
from crossbar_ep.io.traces import TraceError, open_run
from crossbar_ep.runs import train

MiB = 1 << 20


def traced(epochs=2, **training):
    """A tiny digital run with traces (trajectories of batch 0, weights every epoch)."""
    return small_config(training={"epochs": epochs, "optimizer": "sgd", "lr": 0.05, **training},
                        traces={"enabled": True, "batches": [0], "samples": 4})


def after_epoch(n, action):
    """An ``on_epoch`` callback that runs ``action()`` once epoch ``n`` is saved."""
    return lambda row: action() if row["epoch"] == n else None


# ---------------------------------------------------------------- item 6: disk, permissions
def test_low_disk_space_stops_before_writing_and_keeps_checkpoint(tmp_path, monkeypatch):
    d = str(tmp_path / "r")
    run = train.start(traced(2), d)
    usage = train.shutil.disk_usage(d)
    full = usage._replace(free=10 * MiB)
    with pytest.raises(train.RunWriteError, match=r"only 10 MiB free, epoch 2 needs about "
                       r"\d+ MiB.*nothing of epoch 2 was written and the checkpoint of epoch "
                       r"1 is kept.*--resume"):
        train.fit(run, progress=False, on_epoch=after_epoch(
            1, lambda: monkeypatch.setattr(train.shutil, "disk_usage", lambda p: full)))
    monkeypatch.undo()
    with open_run(d) as tr:
        assert tr.epochs == [1] and tr.metrics["test_acc"].shape == (1,)
    resumed = train.resume(d)
    assert resumed.epochs_done == 1
    train.fit(resumed, progress=False)
    with open_run(d) as tr:
        assert tr.epochs == [1, 2]


@pytest.mark.parametrize("code, hint", [(errno.ENOSPC, "the disk is full"),
                                        (errno.EROFS, "the file system is read-only")])
def test_checkpoint_write_failure_is_a_clear_error(tmp_path, monkeypatch, code, hint):
    d = str(tmp_path / "r")
    run = train.start(small_config(training={"epochs": 3}), d)

    def fail(*a, **k):
        raise OSError(code, os.strerror(code))

    with pytest.raises(train.RunWriteError, match=rf"checkpoint.npz: cannot write .*{hint}"
                       r".*checkpoint of epoch 1 is kept.*--resume"):
        train.fit(run, progress=False, on_epoch=after_epoch(
            1, lambda: monkeypatch.setattr(train.np, "savez", fail)))
    monkeypatch.undo()
    assert train.resume(d).epochs_done == 1          # the old checkpoint is intact


def test_metrics_write_failure_names_file_and_exits_2(tmp_path, monkeypatch, capsys):
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump({"name": "m", "data": {"dataset": "synthetic",
                                   "synthetic_features": 20, "synthetic_classes": 4,
                                   "synthetic_train": 200, "synthetic_test": 50},
                                   "model": {"hidden": [12]},
                                   "training": {"epochs": 1, "batch_size": 50, "T": 6,
                                                "K": 4}}))

    def fail(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train, "write_metrics", fail)
    assert main(["run", str(exp), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "metrics.csv: cannot write (No space left on device); the disk is full" in err
    assert "the checkpoint holds epoch 1" in err and "Traceback" not in err


def test_trace_write_enospc_exits_2_without_traceback(tmp_path, monkeypatch, capsys):
    import h5py
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump(traced(2).to_dict()))
    real = h5py.File

    def flaky(path, mode="r", *a, **k):
        if mode == "a":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, mode, *a, **k)

    monkeypatch.setattr(h5py, "File", flaky)
    assert main(["run", str(exp), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "traces.h5: cannot write the trace file" in err and "disk is full" in err
    assert "Traceback" not in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores file permissions")
def test_read_only_run_folder_is_a_clear_error(tmp_path):
    d = tmp_path / "r"
    run = train.start(small_config(training={"epochs": 2}), str(d))
    try:
        with pytest.raises(train.RunWriteError, match=r"cannot write .*permission denied: "
                           r"make the run directory writable"):
            train.fit(run, progress=False, on_epoch=after_epoch(1, lambda: d.chmod(0o555)))
    finally:
        d.chmod(0o755)
    assert train.resume(str(d)).epochs_done == 1


# ---------------------------------------------------------------- item 7: divergence
def test_exploding_learning_rate_stops_and_keeps_previous_checkpoint(tmp_path):
    d = str(tmp_path / "r")
    run = train.start(small_config(training={"epochs": 3, "optimizer": "sgd"}), d)
    good = {}

    def explode():                     # as if training.lr were 1e6 from epoch 2 on
        good.update({k: w.copy() for k, w in run.net.W.items()})
        for name in run.learner.opt.lrs:
            run.learner.opt.lrs[name] = 1e6

    with pytest.raises(train.DivergenceError, match=r"diverged at epoch 2, batch \d+: \w+ "
                       r"\(learning rate 1e\+06\) reached max \|w\| = .*limit 1e\+06.*"
                       r"training.lr.*checkpoint of epoch 1 .* is kept"):
        train.fit(run, progress=False, on_epoch=after_epoch(1, explode))
    assert issubclass(train.DivergenceError, CrossbarEPError)     # CLI: message, exit 2
    back = train.resume(d)
    assert back.epochs_done == 1
    for k, w in back.net.W.items():
        assert np.all(np.isfinite(w))
        np.testing.assert_array_equal(w, good[k])


def test_nan_weight_names_the_layer(tmp_path):
    run = train.start(small_config(), str(tmp_path / "r"))
    run.net.W["W1"][0, 0] = np.nan
    with pytest.raises(train.DivergenceError, match=r"epoch 1, batch 0: W1 .* max \|w\| = nan"
                       r".*nothing was saved"):
        train.fit(run, progress=False)
    assert not os.path.exists(os.path.join(run.out_dir, train.CHECKPOINT))


def test_nan_input_gives_message_not_floating_point_traceback(tmp_path, monkeypatch, capsys):
    real = train.load_dataset

    def poisoned(*a, **k):
        data = real(*a, **k)
        data.x_train[:, 3] = np.nan
        return data

    monkeypatch.setattr(train, "load_dataset", poisoned)
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump(small_config(training={"epochs": 1}).to_dict()))
    assert main(["run", str(exp), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training diverged at epoch 1, batch 0: the input batch holds NaN" in err
    assert "FloatingPointError" not in err and "Traceback" not in err


# ---------------------------------------------------------------- item 10: readers
def test_open_run_held_during_training_does_not_stop_it(tmp_path):
    d = str(tmp_path / "r")
    run = train.start(traced(2), d)
    seen = []
    with open_run(d) as tr:                       # held across both epoch writes
        train.fit(run, progress=False, on_epoch=lambda row: seen.append(tr.epochs))
        assert seen == [[1], [1, 2]]
        assert run.epochs_done == 2 and tr.epochs == [1, 2]
        np.testing.assert_allclose(tr.metrics["test_acc"], [r["test_acc"] for r in run.history])
        assert tr.trajectories(2, 0)[1].shape[1] == 4


def _hold(path):
    """A separate process holding ``path`` open with HDF5's default locking (like HDFView)."""
    code = ("import sys, h5py; f = h5py.File(sys.argv[1], 'r'); print('ready', flush=True); "
            "sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code, path], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def _release(p):
    p.stdin.close()
    p.wait(timeout=30)


@pytest.mark.parametrize("release", ["before_end", "after_run"])
def test_foreign_reader_lock_sends_epoch_to_side_file_then_merges(tmp_path, monkeypatch,
                                                                   capsys, release):
    monkeypatch.setattr(traces, "LOCK_WAIT_S", 0.3)
    d = str(tmp_path / "r")
    path = os.path.join(d, "traces.h5")
    run = train.start(traced(2), d)
    holder = {}

    def on_epoch(row):
        if row["epoch"] == 1:
            holder["p"] = _hold(path)
        else:
            side = os.path.join(d, "traces.pending-0002.h5")
            assert os.path.exists(side)
            with open_run(d) as tr:                # reads the side file too
                assert tr.epochs == [1, 2]
                assert tr.metrics["test_acc"][1] == pytest.approx(row["test_acc"])
                assert tr.settle(2)["free_steps"].shape == (8,)
            if release == "before_end":
                _release(holder["p"])

    try:
        train.fit(run, progress=False, on_epoch=on_epoch)
        err = capsys.readouterr().err
        assert "another process holds the file open; epoch 2 went to traces.pending-0002.h5" \
            in err
        if release == "after_run":
            assert "close the other program and run crossbar-ep run --resume" in err
            with pytest.raises(TraceError, match="another process holds the file open"):
                train.resume(d)
            _release(holder["p"])
            train.resume(d)                        # merges the side file
    finally:
        if holder["p"].poll() is None:
            _release(holder["p"])
    assert not os.path.exists(os.path.join(d, "traces.pending-0002.h5"))
    import h5py
    with h5py.File(path, "r") as f:                # all in the main file now
        assert sorted(f["epochs"]) == ["0001", "0002"]
        np.testing.assert_allclose(f["metrics/test_acc"][()],
                                   [r["test_acc"] for r in run.history])
        assert f["epochs/0002/batches/00000/trajectories/free/s1"].shape[1] == 4


def test_reader_polling_during_writes_sees_consistent_data(tmp_path):
    d = str(tmp_path / "r")
    run = train.start(traced(3), d)
    stop = tmp_path / "stop"
    code = f"""
import os, sys
from crossbar_ep.io.traces import TraceError, open_run
ok = errors = 0
while not os.path.exists({str(stop)!r}):
    try:
        with open_run({d!r}) as tr:
            lens = {{len(v) for v in tr.metrics.values()}}
            assert len(lens) <= 1, lens
            for e in tr.epochs:
                tr.settle(e)
        ok += 1
    except TraceError as exc:
        errors += 1
print(ok, errors)
"""
    env = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        train.fit(run, progress=False)
    finally:
        stop.write_text("")
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    ok, errors = map(int, out.split())
    assert ok > 0
    with open_run(d) as tr:
        assert tr.epochs == [1, 2, 3]

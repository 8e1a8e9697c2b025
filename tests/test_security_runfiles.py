"""Run folders from elsewhere: symbolic links and special files in them, trace files and
checkpoints of other runs, files a kill left behind the checkpoint, run folders written by
the previous version, and error hints that are commands which work (docs/limits.md, "Run
directories")."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO, small_config

from crossbar_ep.cli import main
from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.io.traces import open_run
from crossbar_ep.runs import train
from crossbar_ep.runs.rundir import RunDir

OLD_RUN = os.path.join(REPO, "tests", "data", "run_format2")


def cfg(epochs=2, traces=False, **training):
    extra = {"traces": {"enabled": True, "batches": [0], "samples": 4}} if traces else {}
    return small_config(training={"epochs": epochs, "optimizer": "sgd", "lr": 0.05,
                                  **training}, **extra)


def trained(d, epochs=2, traces=False, stop_after=None):
    run = train.start(cfg(epochs, traces), str(d))

    def stop(row):
        if row["epoch"] == stop_after:
            raise KeyboardInterrupt
    try:
        train.fit(run, progress=False, on_epoch=stop)
    except KeyboardInterrupt:
        pass
    run.lock.release()
    return run


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def hinted_commands(text: str) -> list:
    """The shell commands an error message suggests."""
    return [m.strip() for m in re.findall(r"((?:cp -r \S+ \S+ && )?crossbar-ep [^;\n]*?)"
                                          r"(?=;|\n|$|\)$)", text)]


def run_hint(cmd: str, cwd=None) -> subprocess.CompletedProcess:
    """Run a suggested command with this checkout's crossbar-ep."""
    shell = cmd.replace("crossbar-ep ", f"{sys.executable} -m crossbar_ep.cli ") + " --quiet" \
        if cmd.split("&&")[-1].split()[1] in ("run", "sweep") else cmd
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run(shell, shell=True, env=env, capture_output=True, text=True,
                          timeout=300, cwd=cwd)


# ---------------------------------------------------------------- 1: links, special files
def test_run_lock_that_links_elsewhere_is_refused_not_truncated(tmp_path, capsys):
    d = tmp_path / "r"
    trained(d, epochs=1)
    victim = tmp_path / "bashrc"
    victim.write_text("alias ll='ls -l'\n")
    (d / "run.lock").unlink()
    (d / "run.lock").symlink_to(os.path.relpath(victim, d))      # as a tarball could hold
    for argv in (("run", "--resume", d, "--epochs", "2", "--quiet"),
                 ("run", "--resume", d, "--quiet")):
        rc, err = cli(capsys, *argv)
        assert rc == 2 and "run.lock" in err and "symbolic link" in err, err
    assert victim.read_text() == "alias ll='ls -l'\n"
    (d / "run.lock").unlink()
    os.mkfifo(d / "run.lock")                                    # a FIFO would block
    rc, err = cli(capsys, "run", "--resume", d, "--epochs", "2", "--quiet")
    assert rc == 2 and "FIFO" in err


def test_trace_file_that_links_elsewhere_is_never_written(tmp_path, capsys):
    victim = tmp_path / "notes.txt"
    victim.write_text("my notes\n")
    other = tmp_path / "other.h5"
    d = tmp_path / "r"
    trained(tmp_path / "o", epochs=1, traces=True)
    shutil.copy(tmp_path / "o" / "traces.h5", other)
    before = other.read_bytes()
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(cfg(1, traces=True).to_dict()))
    d.mkdir()
    shutil.copy(tmp_path / "o" / "config.yaml", d / "config.yaml")   # same run, not started
    (d / "traces.h5").symlink_to(victim)
    rc, err = cli(capsys, "run", exp, "--out", d, "--quiet")             # a fresh run
    assert rc == 2 and "traces.h5" in err and "symbolic link" in err, err
    assert victim.read_text() == "my notes\n"
    # --overwrite removes the link itself, never its target
    rc, err = cli(capsys, "run", exp, "--out", d, "--overwrite", "--quiet")
    assert rc == 0 and victim.read_text() == "my notes\n"
    assert not os.path.islink(d / "traces.h5")
    # resume with the trace file, then a side file, linked to another HDF5 file
    r = tmp_path / "r2"
    trained(r, epochs=2, traces=True, stop_after=1)
    (r / "traces.h5").unlink()
    (r / "traces.h5").symlink_to(other)
    rc, err = cli(capsys, "run", "--resume", r, "--quiet")
    assert rc == 2 and "symbolic link" in err
    assert other.read_bytes() == before
    (r / "traces.h5").unlink()
    shutil.copy(other, r / "traces.h5")
    (r / "traces.pending-0002.h5").symlink_to(victim)
    rc, err = cli(capsys, "run", "--resume", r, "--quiet")
    assert rc == 2 and "traces.pending-0002.h5" in err and "symbolic link" in err
    assert victim.read_text() == "my notes\n"


def test_files_written_by_rename_replace_a_link_not_its_target(tmp_path):
    d = tmp_path / "r"
    trained(d, epochs=2, stop_after=1)
    victim = tmp_path / "v.txt"
    victim.write_text("v")
    for name in ("metrics.csv", "summary.txt", "config.yaml"):
        if name != "config.yaml":
            (d / name).unlink(missing_ok=True)
            (d / name).symlink_to(victim)
    run = train.resume(str(d))
    train.fit(run, progress=False)
    assert victim.read_text() == "v" and not os.path.islink(d / "metrics.csv")


# ---------------------------------------------------------------- 4: trace provenance
def test_another_runs_trace_file_is_refused_on_resume_and_new_traces_starts_one(tmp_path,
                                                                              capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    trained(a, epochs=2, traces=True)                   # another run, 2 epochs of traces
    trained(b, epochs=2, traces=True, stop_after=1)     # this run, stopped after epoch 1
    shutil.copy(a / "traces.h5", b / "traces.h5")
    foreign = (b / "traces.h5").read_bytes()
    rc, err = cli(capsys, "run", "--resume", b, "--quiet")
    assert rc == 2 and "not this run's trace file" in err and "another run" in err, err
    assert (b / "traces.h5").read_bytes() == foreign          # nothing merged or stamped
    (cmd,) = hinted_commands(err)
    assert cmd == f"crossbar-ep run --resume {b} --new-traces"
    done = run_hint(cmd)
    assert done.returncode == 0, done.stderr
    assert (b / "traces.replaced-1.h5").read_bytes() == foreign     # kept, renamed
    with open_run(str(b)) as tr:
        assert tr.epochs == [2]                                   # this run's from here on
        assert tr._attr("run_id") == RunDir(str(b)).identity()["run_id"]


def test_missing_trace_file_hint_works(tmp_path, capsys):
    d = tmp_path / "r"
    trained(d, epochs=2, traces=True, stop_after=1)
    (d / "traces.h5").unlink()
    rc, err = cli(capsys, "run", "--resume", d, "--quiet")
    assert rc == 2 and "trace file is missing" in err
    assert "traces.enabled=false" not in err                 # --resume refuses --set
    (cmd,) = hinted_commands(err)
    done = run_hint(cmd)
    assert done.returncode == 0, done.stderr


def test_api_trace_callback_refuses_a_cli_run_folder(tmp_path):
    import crossbar_ep as api
    d = tmp_path / "r"
    trained(d, epochs=1, traces=True)
    before = (d / "traces.h5").read_bytes()
    net = api.make_network([20, 8, 4], lr=0.05, seed=0)
    model = api.ep_learner(net, T=4, K=2, optimizer="sgd")
    x = np.random.default_rng(0).random((40, 20))
    y = np.arange(40) % 4
    with pytest.raises(CrossbarEPError, match="holds a run of crossbar-ep run"):
        api.fit(model, x, y, epochs=1, batch_size=20, callbacks=[api.Traces(str(d))])
    assert (d / "traces.h5").read_bytes() == before
    own = tmp_path / "api"
    for _ in range(2):                          # its own folder: replaced on each fit
        api.fit(model, x, y, epochs=1, batch_size=20, callbacks=[api.Traces(str(own))])
    with open_run(str(own / "traces.h5")) as tr:
        assert tr.epochs == [1]
    shutil.copy(d / "traces.h5", own / "traces.h5")          # a CLI run's file put there
    with pytest.raises(CrossbarEPError, match="a trace file the Python API did not write"):
        api.fit(model, x, y, epochs=1, batch_size=20, callbacks=[api.Traces(str(own))])


# ---------------------------------------------------------------- 5: self-repair
def _killed_after_checkpoint(d):
    """A run of 2 epochs whose process died between the checkpoint of epoch 2 and the
    metrics and summary writes (files as such a kill leaves them)."""
    saved = {}

    def keep(row):
        if row["epoch"] == 1:
            saved.update({n: (d / n).read_bytes() for n in ("metrics.csv", "metrics.json")})
    run = train.start(cfg(2), str(d))
    train.fit(run, progress=False, on_epoch=keep)
    run.lock.release()
    final = run.history[-1]["test_acc"]
    for n, data in saved.items():
        (d / n).write_bytes(data)
    (d / "summary.txt").unlink()
    (d / ".tmp-abc123checkpoint.npz").write_bytes(b"partial")
    return final


def test_resume_rebuilds_files_a_kill_left_behind(tmp_path, capsys):
    d = tmp_path / "r"
    final = _killed_after_checkpoint(d)
    rc, err = cli(capsys, "run", "--resume", d, "--quiet")
    assert rc == 0 and "nothing to do" in err
    assert len((d / "metrics.csv").read_text().splitlines()) == 3
    assert len(json.loads((d / "metrics.json").read_text())) == 2
    assert f"final test {100 * final:.2f}%" in (d / "summary.txt").read_text()
    assert not list(d.glob(".tmp-*"))


def test_summary_and_plot_see_the_checkpoint_not_stale_files(tmp_path, capsys):
    d = tmp_path / "r"
    final = _killed_after_checkpoint(d)
    rc, out = main(["summary", str(d), "--format", "csv"]), capsys.readouterr().out
    assert rc == 0
    assert f"{100 * final:.2f}" in out.splitlines()[1].split(",")[4]     # final %
    assert len((d / "metrics.csv").read_text().splitlines()) == 3        # repaired too
    assert (d / "summary.txt").exists()


# ---------------------------------------------------------------- 8: hints that work
def test_checkpoint_of_another_config_is_named_as_such_and_the_hint_works(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    trained(b, epochs=1)
    run = train.start(small_config(training={"epochs": 1, "lr": 0.02, "optimizer": "sgd"}),
                      str(a))
    train.fit(run, progress=False)
    run.lock.release()
    shutil.copy(a / "checkpoint.npz", b / "checkpoint.npz")
    rc, err = cli(capsys, "run", "--resume", b, "--epochs", "2", "--quiet")
    assert rc == 2 and "checkpoint.npz: belongs to another run" in err
    assert "training.lr: 0.02 -> 0.05" in err and "edited" not in err, err
    (cmd,) = hinted_commands(err)
    assert cmd == f"crossbar-ep run {b}/config.yaml --out {b} --overwrite"
    done = run_hint(cmd)
    assert done.returncode == 0, done.stderr
    assert RunDir(str(b)).read_checkpoint(arrays=False)[0]["config"]["training"]["lr"] == 0.05
    # a checkpoint without a run id (the previous version's) of another config
    c = tmp_path / "c"
    run = train.start(small_config(training={"epochs": 2, "lr": 0.02, "optimizer": "sgd"},
                                   traces={"enabled": True, "batches": [0], "samples": 4}),
                      str(c))
    run.lock.release()
    shutil.copy(os.path.join(OLD_RUN, "checkpoint.npz"), c / "checkpoint.npz")
    rc, err = cli(capsys, "run", "--resume", c, "--quiet")
    assert rc == 2 and "checkpoint.npz: was trained with another config than this run's" \
        in err and "training.lr: 0.05 -> 0.02" in err and "edited" not in err, err
    (cmd,) = hinted_commands(err)
    assert run_hint(cmd).returncode == 0


def test_edited_config_hint_works(tmp_path, capsys):
    d = tmp_path / "r"
    trained(d, epochs=1)
    raw = yaml.safe_load((d / "config.yaml").read_text())
    raw["training"]["lr"] = 0.01
    (d / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    rc, err = cli(capsys, "run", "--resume", d, "--epochs", "2", "--quiet")
    assert rc == 2 and "edited since the checkpoint" in err
    (cmd,) = hinted_commands(err)
    done = run_hint(cmd.replace("--accept-config-changes", "--accept-config-changes --epochs 2"))
    assert done.returncode == 0, done.stderr


def _mount(path, opts):
    path.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                    reason="needs root to mount a read-only tmpfs")
def test_read_only_run_folder_hint_works(tmp_path, capsys):
    m = tmp_path / "m"
    if not _mount(m, "size=128m"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        d = m / "r"
        trained(d, epochs=2, stop_after=1)
        subprocess.run(["mount", "-o", "remount,ro", str(m)], check=True)
        rc, err = cli(capsys, "run", "--resume", d, "--quiet")
        assert rc == 2 and "--out" not in err, err
        (cmd,) = hinted_commands(err)
        assert cmd.startswith(f"cp -r {d} ") and "&& crossbar-ep run --resume" in cmd
        copy = cmd.split()[3]
        done = run_hint(cmd.replace(copy, str(tmp_path / "copy")))   # a writable place
        assert done.returncode == 0, done.stderr
        assert RunDir(str(tmp_path / "copy")).history()[-1]["epoch"] == 2
    finally:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


# ---------------------------------------------------------------- the previous version's runs
def test_run_folder_of_the_previous_version_resumes_bit_identically(tmp_path):
    """tests/data/run_format2 was written by the version before run ids (checkpoint format
    2, no run.json, a trace file without identity), stopped after epoch 1 of 2."""
    d = tmp_path / "old"
    shutil.copytree(OLD_RUN, d)
    run = train.resume(str(d))
    assert run.epochs_done == 1
    train.fit(run, progress=False)
    fresh = train.start(cfg(2, traces=True), str(tmp_path / "new"))
    train.fit(fresh, progress=False)
    for a, b in zip(run.history, fresh.history):
        for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert a[k] == b[k], (k, a[k], b[k])
    for k, w in run.net.W.items():
        np.testing.assert_array_equal(w, fresh.net.W[k])
    with open_run(str(d)) as tr:
        assert tr.epochs == [1, 2]
        assert tr._attr("run_id") == RunDir(str(d)).identity()["run_id"]

"""Run-directory safety: validated --epochs on resume, locking, foreign --out folders,
edited configs on resume, unsafe experiment names, clear errors instead of tracebacks."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import yaml
from conftest import REPO, small_config

from crossbar_ep.cli import main
from crossbar_ep.errors import CheckpointError, ConfigError
from crossbar_ep.runs import train
from crossbar_ep.runs.rundir import RunDir, config_hash

TINY = {"data": {"synthetic_train": 100, "synthetic_test": 50}, "model": {"hidden": [8, 8]},
        "training": {"epochs": 1, "T": 4, "K": 2}}


def tiny(**training):
    return small_config(data=TINY["data"], model=TINY["model"],
                        training={**TINY["training"], **training})


def exp_file(tmp_path, name="tiny", epochs=1):
    raw = tiny(epochs=epochs).to_dict()
    raw["name"] = name
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def trained(path, epochs=1, **training):
    run = train.start(tiny(epochs=epochs, **training), str(path))
    train.fit(run, progress=False)
    return run


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


# ---------------------------------------------------------------- 1: --epochs on resume
def test_resume_epochs_validated_before_config_is_written(tmp_path, capsys):
    d = tmp_path / "r"
    trained(d, epochs=2)
    cfg_before = (d / "config.yaml").read_bytes()
    ck_before = (d / "checkpoint.npz").read_bytes()
    for bad, msg in (("0", "must be >= 1, got 0"), ("-3", "must be >= 1, got -3"),
                     ("1", "already trained 2 epochs; give --epochs 3")):
        rc, err = cli(capsys, "run", "--resume", d, "--epochs", bad, "--quiet")
        assert rc == 2 and "training.epochs" in err and msg in err, err
    rc, err = cli(capsys, "run", "--resume", d, "--epochs", "2", "--quiet")
    assert rc == 0 and "nothing to do" in err
    assert (d / "config.yaml").read_bytes() == cfg_before          # never rewritten
    assert (d / "checkpoint.npz").read_bytes() == ck_before
    run = train.resume(str(d))                                      # still resumable
    assert run.epochs_done == 2 and run.cfg.training.epochs == 2


def test_resume_epochs_equal_done_of_interrupted_run_stops_there(tmp_path):
    d = tmp_path / "r"
    run = train.start(tiny(epochs=5), str(d))

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit(run, progress=False, on_epoch=stop)
    before = (d / "config.yaml").read_bytes()
    again = train.resume(str(d), epochs=1)
    assert again.epochs_done == again.cfg.training.epochs == 1     # nothing left to train
    assert (d / "config.yaml").read_bytes() == before


# ---------------------------------------------------------------- 2: locking, --out folders
def test_second_process_locked_out_and_sigkill_releases_lock(tmp_path, capsys):
    exp = exp_file(tmp_path, epochs=100000)
    d = tmp_path / "busy"
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "crossbar_ep.cli", "run", str(exp), "--out",
                             str(d), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not (d / "checkpoint.npz").exists():
            assert proc.poll() is None and time.time() - t0 < 60, "training did not start"
            time.sleep(0.1)
        for argv in (("run", "--resume", d, "--quiet"), ("run", exp, "--out", d, "--quiet"),
                     ("run", exp, "--out", d, "--overwrite", "--quiet")):
            rc, err = cli(capsys, *argv)
            assert rc == 2 and f"another process (pid {proc.pid}) is using this run" in err, err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (d / "run.lock").exists()                    # left behind by the killed process
    run = train.resume(str(d))                          # ... and it does not block
    assert run.epochs_done >= 1
    assert (d / "run.lock").read_text().strip() == str(os.getpid())


def test_out_folder_that_is_not_this_run_is_refused(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match=r"not empty \(it holds 'notes.txt'\).*--overwrite"):
        train.start(tiny(), str(foreign))
    assert sorted(os.listdir(foreign)) == ["notes.txt"]            # nothing written
    train.start(tiny(), str(foreign), overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"        # only run files replaced

    other = tmp_path / "other"
    trained(other)
    with pytest.raises(CheckpointError, match=r"another config \(training.lr: 0.005 -> 0.02\)"):
        train.start(tiny(lr=0.02), str(other))
    with pytest.raises(CheckpointError, match="already holds a run; use --resume"):
        train.start(tiny(epochs=3), str(other))        # same experiment: epochs do not count
    rc, err = cli(capsys, "run", exp_file(tmp_path), "--out", other, "--set", "training.lr=0.02",
                  "--overwrite", "--quiet")
    assert rc == 0
    assert yaml.safe_load((other / "config.yaml").read_text())["training"]["lr"] == 0.02

    early = tmp_path / "early"                  # same experiment, killed before a checkpoint
    train.start(tiny(), str(early))
    train.start(tiny(), str(early))             # starts again in place
    with pytest.raises(CheckpointError, match="another config"):
        train.start(tiny(seed=9), str(early))


def test_overwrite_removes_the_old_runs_files(tmp_path):
    d = tmp_path / "r"
    trained(d, epochs=2)
    run = train.start(tiny(lr=0.02), str(d), overwrite=True)
    assert not (d / "checkpoint.npz").exists() and not (d / "metrics.csv").exists()
    train.fit(run, progress=False)
    assert len(json.loads((d / "metrics.json").read_text())) == 1


# ---------------------------------------------------------------- 3: edited config on resume
def test_edited_config_refused_on_resume_unless_accepted(tmp_path, capsys):
    d = tmp_path / "r"
    trained(d)
    raw = yaml.safe_load((d / "config.yaml").read_text())
    raw["training"]["lr"] = 0.01
    raw["settling"]["mode"] = "ode"
    (d / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    rc, err = cli(capsys, "run", "--resume", d, "--epochs", "2", "--quiet")
    assert rc == 2
    assert "training.lr: 0.005 -> 0.01" in err and "settling.mode: 'discrete' -> 'ode'" in err
    assert "--accept-config-changes" in err
    run = train.resume(str(d), accept_changes=True)     # accepted: the checkpoint records it
    assert run.cfg.training.lr == 0.01
    meta = RunDir(str(d)).read_checkpoint(arrays=False)[0]
    assert meta["config"]["training"]["lr"] == 0.01 and meta["format"] == 2
    assert train.resume(str(d), epochs=3).epochs_done == 1     # no further complaint


def test_epochs_extension_is_not_a_change_and_old_checkpoints_resume(tmp_path):
    d = tmp_path / "r"
    trained(d)
    assert train.resume(str(d), epochs=2).cfg.training.epochs == 2
    # a checkpoint from before config hashes (format 1): resumes, even with an edit
    with np.load(d / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    for k in ("config", "config_sha256"):
        meta.pop(k)
    meta["format"] = 1
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(d / "checkpoint.npz", **arrays)
    raw = yaml.safe_load((d / "config.yaml").read_text())
    raw["training"]["lr"] = 0.01
    (d / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert train.resume(str(d)).epochs_done == 1


def test_resume_for_another_config_refused(tmp_path):
    """compare resumes its run folders: a changed experiment must not reuse them."""
    d = tmp_path / "r"
    trained(d)
    with pytest.raises(CheckpointError, match=r"another config \(training.seed: 3 -> 4\)"):
        train.resume(str(d), expect=tiny(seed=4))
    assert train.resume(str(d), expect=tiny(epochs=4), epochs=4).epochs_done == 1


# ---------------------------------------------------------------- 4: experiment names
@pytest.mark.parametrize("name", ["../../escape", "/tmp/abs", "a/b", "a\\b", "tab\there",
                                  "nl\nx", "del\x7f"])
def test_unsafe_name_cannot_escape_runs(tmp_path, name):
    cfg = replace(tiny(), name=name)
    with pytest.raises(ConfigError, match=r"tiny.yaml: name: .* may not hold path separators"):
        train.default_run_dir(cfg, str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_unsafe_name_via_cli_writes_nothing(tmp_path, capsys, monkeypatch):
    exp = exp_file(tmp_path, name="../../escape")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    rc, err = cli(capsys, "run", exp, "--quiet")
    assert rc == 2 and "name: '../../escape'" in err
    assert os.listdir(work) == [] and sorted(os.listdir(tmp_path)) == ["a", "exp.yaml"]
    path = train.default_run_dir(replace(tiny(), name="v1.2_final run"), str(tmp_path / "runs"))
    assert os.path.dirname(path) == str(tmp_path / "runs")


# ---------------------------------------------------------------- 5: clear errors, exit 2
def test_run_errors_are_messages_not_tracebacks(tmp_path, capsys):
    exp = exp_file(tmp_path)
    folder = tmp_path / "folder"
    folder.mkdir()
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (("run", folder), "is a folder, not an experiment file"),
        (("run", latin1), "latin1.yaml: not UTF-8 text"),
        (("run", tmp_path / "missing.yaml"), "missing.yaml: no such experiment file"),
        (("run", "--resume", folder), "not a run directory (no config.yaml)"),
        (("run", "--resume", a_file), "not a run directory (a file, not a folder)"),
        (("run", "--resume", tmp_path / "nowhere"), "not a run directory (no such folder)"),
        (("run", exp, "--out", a_file), "file.txt: is a file, not a folder"),
        (("run", exp, "--out", a_file / "sub"), "cannot create the run directory"),
        (("run", exp, "--accept-config-changes"), "goes with --resume"),
        (("run", "--resume", folder, "--out", folder), "drop the experiment file"),
    ]
    for argv, msg in cases:
        rc, err = cli(capsys, *argv, "--quiet")
        assert rc == 2 and err.startswith("error: ") and msg in err, (argv, err)


def test_run_config_not_utf8_on_resume(tmp_path, capsys):
    d = tmp_path / "r"
    trained(d)
    (d / "config.yaml").write_bytes(b"name: \xff\n")
    rc, err = cli(capsys, "run", "--resume", d, "--quiet")
    assert rc == 2 and "config.yaml: not UTF-8 text" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores file permissions, so a read-only folder stays writable")
def test_read_only_out_parent(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        rc, err = cli(capsys, "run", exp_file(tmp_path), "--out", parent / "r", "--quiet")
    finally:
        parent.chmod(0o700)
    assert rc == 2 and "cannot create the run directory" in err


def test_keys_added_since_the_checkpoint_are_not_changes(tmp_path):
    """A checkpoint written before a config key existed resumes without
    --accept-config-changes: the new key's default is not an edit; a real edit still is."""
    d = tmp_path / "r"
    trained(d)
    with np.load(d / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["config"]["training"].pop("nudging")           # as written by an older version
    meta["config"]["settling"].pop("average_last")
    meta["config_sha256"] = config_hash(meta["config"])
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(d / "checkpoint.npz", **arrays)
    assert train.resume(str(d), epochs=2).epochs_done == 1
    raw = yaml.safe_load((d / "config.yaml").read_text())
    raw["training"]["nudging"] = "centered"
    (d / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(CheckpointError, match=r"training.nudging: 'one_sided' -> 'centered'"):
        train.resume(str(d))


def test_a_switched_off_section_changed_since_the_checkpoint_is_not_an_edit(tmp_path):
    """A digital run's checkpoint that stored another crossbar.update default (the section is
    off) resumes without --accept-config-changes; the same change with the crossbar on is
    still an edit."""
    from crossbar_ep.runs.rundir import config_changes
    d = tmp_path / "r"
    trained(d)
    with np.load(d / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    assert meta["config"]["crossbar"]["enabled"] is False
    meta["config"]["crossbar"]["update"]["transfer_columns"] = 1   # an older default
    meta["config_sha256"] = config_hash(meta["config"])
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(d / "checkpoint.npz", **arrays)
    assert train.resume(str(d), epochs=2).epochs_done == 1
    old = {"crossbar": {"enabled": True, "update": {"transfer_columns": 1}}}
    new = {"crossbar": {"enabled": True, "update": {"transfer_columns": None}}}
    assert config_changes(old, new) == ["crossbar.update.transfer_columns: 1 -> None"]
    new["crossbar"]["enabled"] = False
    assert config_changes(old, new) == ["crossbar.enabled: True -> False",
                                        "crossbar.update.transfer_columns: 1 -> None"]

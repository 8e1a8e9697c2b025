"""Sweep robustness: Ctrl-C stops a sweep's workers at once, the work a sweep file can ask
for is bounded before anything is built, and --resume refuses results whose config changed."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO, make_fake_dataset

from crossbar_ep.errors import ConfigError, CrossbarEPError
from crossbar_ep.runs.sweep import load_sweep, read_results, run_sweep

BASE = {"name": "tiny",
        "data": {"dataset": "synthetic", "synthetic_features": 12, "synthetic_classes": 3,
                 "synthetic_train": 60, "synthetic_test": 20},
        "model": {"hidden": [8]},
        "training": {"optimizer": "sgd", "lr": 0.1, "epochs": 1, "batch_size": 30, "T": 4,
                     "K": 3}}


def write(folder, sweep, base=BASE):
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    path = folder / "sweep.yaml"
    path.write_text(sweep if isinstance(sweep, str) else yaml.safe_dump(
        {"base": "base.yaml", **sweep}, sort_keys=False))
    return path


def quiet(_msg):
    pass


# ---------------------------------------------------------------------- case 1: Ctrl-C
def _rows(out):
    return read_results(str(out)) if os.path.exists(out / "results.csv") else []


def _workers(pid):
    """Process ids of the sweep's worker processes (children running sweep_worker)."""
    found = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"crossbar_ep.runs.sweep_worker" in cmd:
            found.append(int(d))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["ctrl-c", "sigterm", "sigkill"])
def test_ctrl_c_stops_workers_at_once_and_resume_finishes(tmp_path, stop):
    # point 0 is quick; point 1 reads a data set found through $CROSSBAR_EP_DATA and settles
    # for 50000 steps a batch: minutes on the large copy the sweep starts with, a second on
    # the tiny copy the resume is given (the data folder is not part of a point's config)
    path = write(tmp_path, {"zip": {"data.dataset": ["synthetic", "fashion-mnist"],
                                    "training.T": [4, 50000]}, "seeds": [0]})
    make_fake_dataset(tmp_path / "big" / "fashion-mnist", n_train=12000, n_test=20,
                      compress=False)
    make_fake_dataset(tmp_path / "tiny" / "fashion-mnist", n_train=60, n_test=20,
                      compress=False)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "crossbar_ep.cli", "sweep", str(path), "--out", str(out),
           "--workers", "2", "--quiet"]
    env = {**os.environ, "PYTHONPATH": REPO, "CROSSBAR_EP_DATA": str(tmp_path / "big")}
    slow = load_sweep(str(path)).points[1].point_id
    with open(tmp_path / "log.txt", "w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while not (len(_rows(out)) == 1 and (out / "points" / slow).is_dir()):
                assert proc.poll() is None and time.monotonic() < deadline, "sweep did not start"
                time.sleep(0.2)
            workers = _workers(proc.pid)
            assert workers
            # Ctrl-C in a terminal signals the workers too; they ignore it, and the main
            # process alone must stop them: signal it alone (SIGTERM: the same; SIGKILL: the
            # workers notice their sweep is gone and stop by themselves)
            os.kill(proc.pid, stop)
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"crossbar-ep sweep still running 20 s after {stop.name}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.seek(0)
        text = log.read()
    if stop == signal.SIGKILL:
        assert rc == -signal.SIGKILL
    else:
        assert rc == 130
        assert f"--out {out} --resume" in text and "Traceback" not in text
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{w}") for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")], "workers left running"
    rows = _rows(out)
    assert [(r["data.dataset"], r["status"]) for r in rows] == [("synthetic", "ok")]

    env["CROSSBAR_EP_DATA"] = str(tmp_path / "tiny")
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 already done, 1 to run" in done.stderr
    assert sorted((r["data.dataset"], r["status"]) for r in _rows(out)) == [
        ("fashion-mnist", "ok"), ("synthetic", "ok")]


# ---------------------------------------------------------------------- case 2: bounded work
def _fails_fast(path, match):
    t = time.monotonic()
    with pytest.raises(CrossbarEPError, match=match):
        load_sweep(str(path))
    assert time.monotonic() - t < 10


def test_point_count_is_checked_before_points_are_built(tmp_path, monkeypatch):
    grid = {f"model.extra{i}": list(range(10)) for i in range(9)}    # 10^9 points
    path = write(tmp_path, {"grid": grid, "seeds": [0]})
    _fails_fast(path, rf"{path}: grid x zip x random x seeds: the sweep has 1000000000 points "
                      rf"\(grid 10 x 10 x .*\), more than the limit of 100000; .*"
                      rf"CROSSBAR_EP_MAX_SWEEP_POINTS=1000000000")
    for n in (100000000, 1e8, 0, 2.5, True, "many"):
        path = write(tmp_path, {"random": {"n": n, "params": {
            "training.lr": {"uniform": [0.01, 0.1]}}}})
        _fails_fast(path, r"random.n: needs a whole number of samples from 1 to 100000")
    path = write(tmp_path, {"grid": {"training.lr": [0.1, 0.2, 0.3]}, "seeds": [0, 1],
                            "reference": True})
    monkeypatch.setenv("CROSSBAR_EP_MAX_SWEEP_POINTS", "7")
    _fails_fast(path, r"the sweep has 8 points \(grid 3, seeds 2\), more than the limit of 7")
    monkeypatch.setenv("CROSSBAR_EP_MAX_SWEEP_POINTS", "8")
    assert len(load_sweep(str(path)).points) == 8
    monkeypatch.setenv("CROSSBAR_EP_MAX_SWEEP_POINTS", "lots")
    _fails_fast(path, r"\$CROSSBAR_EP_MAX_SWEEP_POINTS='lots': needs a positive whole number")


BOMB = """base: base.yaml
set:
  model.a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
  model.b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
  model.c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
  model.d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
  model.e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
  model.f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
  model.g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
  model.h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
  model.i: [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
grid: {training.lr: [0.1, 0.2]}
"""


@pytest.mark.parametrize("text, key", [
    (BOMB, "set.model.i"), ("base: base.yaml\nset: {model.hidden: &r [*r]}\n", "set.model.hidden")],
    ids=["alias-bomb", "self-reference"])
def test_yaml_alias_bomb_under_set_fails_fast(tmp_path, text, key):
    # with YAML's own alias limit (crossbar_ep/yamlio.py) the parser may refuse it first
    path = write(tmp_path, text)
    _fails_fast(path, rf"{path}: ({key}: holds more than 1000000 values|.*alias)")


# ---------------------------------------------------------------------- case 3: stale results
def test_resume_refuses_changed_config_until_accepted(tmp_path, capsys):
    path = write(tmp_path, {"set": {"training.lr": 0.1}, "seeds": [0]})
    out = tmp_path / "s"
    (row,) = run_sweep(str(path), str(out), progress=False, log=quiet)
    assert row["status"] == "ok"
    copy = (out / "sweep.yaml").read_text()

    path.write_text(path.read_text().replace("0.1", "0.2"))
    with pytest.raises(ConfigError, match=r"no longer matches the sweep in this folder \(1 "
                       r"started or finished point .*\n  set.training.lr: 0.1 -> 0.2\n"
                       r"Add --accept-config-changes"):
        run_sweep(str(path), str(out), resume=True, progress=False, log=quiet)
    assert (out / "sweep.yaml").read_text() == copy          # not overwritten before the check
    from crossbar_ep.cli import main
    assert main(["sweep", str(path), "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "set.training.lr: 0.1 -> 0.2" in err and "Traceback" not in err

    path.write_text(copy)                                     # the sweep as it was, base edited
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**BASE, "model": {"hidden": [9]}}))
    with pytest.raises(ConfigError, match=r"\n  base: model.hidden: \[8\] -> \[9\]\n"):
        run_sweep(str(path), str(out), resume=True, progress=False, log=quiet)
    assert read_results(str(out))[0]["config_hash"] == row["config_hash"]

    logs = []
    (new,) = run_sweep(str(path), str(out), resume=True, accept_changes=True, progress=False,
                       log=logs.append)
    assert any("runs again from scratch" in m for m in logs)
    assert new["status"] == "ok" and new["config_hash"] != row["config_hash"]
    with open(os.path.join(new["run_dir"], "config.yaml")) as fh:
        assert yaml.safe_load(fh)["model"]["hidden"] == [9]
    # accepted: a plain resume now finds nothing changed and nothing to run
    logs = []
    run_sweep(str(path), str(out), resume=True, progress=False, log=logs.append)
    assert "1 already done, 0 to run" in logs[-1]


def test_keys_added_since_a_sweep_ran_do_not_make_its_points_stale(tmp_path):
    """A sweep folder written before a config key existed (its record and point hashes
    without it) resumes without --accept-config-changes: the new key's default keeps the old
    behaviour.  (A real edit of the base is still refused: the test above.)"""
    import json
    path = write(tmp_path, {"set": {"training.lr": 0.1}, "seeds": [0]})
    out = tmp_path / "s"
    (row,) = run_sweep(str(path), str(out), progress=False, log=quiet)
    rec = json.loads((out / "sweep_record.json").read_text())
    del rec["base_config"]["crossbar"]["update"]["threshold"]        # as an older version
    (out / "sweep_record.json").write_text(json.dumps(rec))
    for name in ("points.json", "results.csv"):                     # its hashes differed
        (out / name).write_text((out / name).read_text().replace(row["config_hash"],
                                                                 "0123456789abcdef"))
    logs = []
    run_sweep(str(path), str(out), resume=True, progress=False, log=logs.append)
    assert "1 already done, 0 to run" in logs[-1]
    # the sweep file now pins that key at its default: an edit, but no point changes
    path.write_text(yaml.safe_dump({"base": "base.yaml", "set": {
        "training.lr": 0.1, "crossbar.update.threshold": 1.0}, "seeds": [0]}, sort_keys=False))
    with pytest.raises(ConfigError, match=r"finished points' configs are unchanged\):\n  "
                       r"set.crossbar.update.threshold: \(absent\) -> 1.0\n.*no finished "
                       r"point reruns"):
        run_sweep(str(path), str(out), resume=True, progress=False, log=quiet)
    logs = []
    run_sweep(str(path), str(out), resume=True, accept_changes=True, progress=False,
              log=logs.append)
    assert "1 already done, 0 to run" in logs[-1]


def test_config_hash_covers_the_device_card(tmp_path):
    card = tmp_path / "card.yaml"
    with open(os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")) as fh:
        card.write_text(fh.read())
    path = write(tmp_path, {"set": {"crossbar.enabled": True, "crossbar.device": "card.yaml"},
                            "seeds": [0]})
    before = load_sweep(str(path)).points[0].config_hash
    card.write_text(card.read_text() + "\n# edited\n")
    assert load_sweep(str(path)).points[0].config_hash != before


def test_resume_of_folder_without_record_is_refused(tmp_path):
    path = write(tmp_path, {"seeds": [0]})
    out = tmp_path / "old"
    (out / "points").mkdir(parents=True)
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["point_id", "kind", "status"])
        w.writerow([load_sweep(str(path)).points[0].point_id, "point", "ok"])
    with pytest.raises(ConfigError, match=r"sweep_record.json is missing"):
        run_sweep(str(path), str(out), resume=True, progress=False, log=quiet)

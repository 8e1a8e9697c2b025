"""Sweeps that survive a killed worker, one sweep per folder, a failed sweep's exit status,
scheduler addresses checked before anything is written, and a quiet Ctrl-C with one worker
(docs/sweeps.md, "Failures"; docs/limits.md, "Sweeps")."""

import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import yaml
from conftest import REPO

from crossbar_ep.cli import main
from crossbar_ep.errors import CheckpointError
from crossbar_ep.runs.sweep import load_sweep, read_results, run_sweep
from crossbar_ep.runs.sweep_worker import ORPHAN_GRACE_S

BASE = {"name": "tiny",
        "data": {"dataset": "synthetic", "synthetic_features": 12, "synthetic_classes": 3,
                 "synthetic_train": 60, "synthetic_test": 30},
        "model": {"hidden": [8]},
        "training": {"optimizer": "sgd", "lr": 0.1, "epochs": 2, "batch_size": 30, "T": 4,
                     "K": 3}}
METRICS = ("status", "best_test_acc", "best_epoch", "final_test_acc", "final_train_acc",
           "epochs", "config_hash")


def write(folder, sweep):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **sweep}, sort_keys=False))
    return path


def env():
    return {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def cli_proc(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "crossbar_ep.cli", *map(str, argv)],
                          env=env(), capture_output=True, text=True, timeout=600, **kw)


def table(out):
    return {r["point_id"]: {k: r.get(k) for k in METRICS} for r in read_results(str(out))}


def quiet(_msg):
    pass


# ---------------------------------------------------------------- fault injection: SIGKILL
SIX = {"zip": {"training.lr": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
               "training.epochs": [25, 2, 2, 2, 2, 2]}, "seeds": [0]}


def _pid_of(run_dir):
    try:
        text = (run_dir / "run.lock").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and os.path.exists(f"/proc/{text}") else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkilled_worker_fails_its_point_only_and_retry_completes_it(tmp_path):
    path = write(tmp_path, SIX)
    slow = load_sweep(str(path)).points[0].point_id          # 25 epochs: the one killed
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "crossbar_ep.cli", "sweep", str(path),
                             "--out", str(out), "--workers", "2", "--quiet"], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 300
        run_dir = out / "points" / slow
        while killed is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow point never reached epoch 2"
            pid = _pid_of(run_dir)
            metrics = run_dir / "metrics.csv"
            if pid and pid != proc.pid and metrics.exists() and \
                    len(metrics.read_text().splitlines()) >= 3:     # 2 epochs checkpointed
                os.kill(pid, signal.SIGKILL)                          # as the OOM killer does
                killed = pid
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, stderr                  # finished, with a failed point
    assert "Traceback" not in stderr
    rows = {r["point_id"]: r for r in read_results(str(out))}
    assert len(rows) == 6
    assert [p for p, r in rows.items() if r["status"] != "ok"] == [slow]   # others finished
    bad = rows[slow]
    assert "WorkerLost" in bad["error"] and "SIGKILL" in bad["error"], bad["error"]
    assert bad["worker_signal"] == "SIGKILL" and float(bad["worker_peak_memory_MiB"]) > 20
    assert f"--out {out} --resume --workers 2 --retry-failed" in stderr

    again = cli_proc("sweep", path, "--out", out, "--resume", "--workers", "2",
                     "--retry-failed", "--quiet")
    assert again.returncode == 0, again.stderr
    assert "5 already done, 1 to run" in again.stderr

    ref = tmp_path / "ref"                                 # the same sweep, never interrupted
    run_sweep(str(path), str(ref), workers=2, progress=False, log=quiet)
    assert table(out) == table(ref)
    with open(out / "points" / slow / "metrics.csv") as a, \
            open(ref / "points" / slow / "metrics.csv") as b:
        cols = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")
        ra = [{k: r[k] for k in cols} for r in csv.DictReader(a)]
        rb = [{k: r[k] for k in cols} for r in csv.DictReader(b)]
    assert ra == rb and len(ra) == 25                      # bit-identical, epoch by epoch


# ---------------------------------------------------------------- (b) one sweep per folder
def lock_held(path) -> bool:
    import fcntl
    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


def test_second_sweep_on_a_folder_is_locked_out(tmp_path):
    path = write(tmp_path, {"grid": {"training.lr": [0.1]}, "set": {"training.epochs": 200},
                            "seeds": [0]})
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "crossbar_ep.cli", "sweep", str(path),
                              "--out", str(out), "--quiet"], env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "sweep.lock").exists() or not (out / "points.json").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        for resume in (False, True):
            with pytest.raises(CheckpointError, match=rf"another process \(pid {first.pid}\) "
                               rf"is using this sweep folder \(it holds sweep.lock\)"):
                run_sweep(str(path), str(out), resume=resume, progress=False, log=quiet)
    finally:
        first.kill()
        first.wait()
    # its orphaned worker ends by itself (told by the kernel, or within its grace) and the
    # point's run.lock dies with it
    deadline = time.monotonic() + ORPHAN_GRACE_S + 20
    while any(lock_held(p) for p in out.rglob("run.lock")):
        assert time.monotonic() < deadline, "the killed sweep's worker still holds run.lock"
        time.sleep(0.1)
    # the killed sweep resumes (its point from scratch, 2 epochs now that the set is restored)
    path.write_text(path.read_text().replace("200", "2"))
    (row,) = run_sweep(str(path), str(out), resume=True, accept_changes=True, progress=False,
                       log=quiet)
    assert row["status"] == "ok", row


def test_results_h5_uses_a_unique_temporary_name(tmp_path, monkeypatch):
    from crossbar_ep.runs import sweep as sw
    path = write(tmp_path, {"seeds": [0]})
    out = tmp_path / "out"
    out.mkdir()
    trap = out / ".tmp-results.h5"                 # the old fixed name, as a link elsewhere
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    trap.symlink_to(victim)
    run_sweep(str(path), str(out), progress=False, log=quiet)
    assert victim.read_text() == "keep"
    names = []
    real = sw.temp_path
    monkeypatch.setattr(sw, "temp_path", lambda *a: names.append(real(*a)) or names[-1])
    sw.write_results(load_sweep(str(path)), str(out), read_results(str(out)))
    sw.write_results(load_sweep(str(path)), str(out), read_results(str(out)))
    assert len(set(names)) == 2 and not any(os.path.exists(n) for n in names)


# ---------------------------------------------------------------- (c) exit status 3
def test_sweep_with_failed_points_exits_3_and_prints_the_retry_command(tmp_path):
    path = write(tmp_path, {"grid": {"data.validation": [0, 100000]}, "seeds": [0]})
    out = tmp_path / "out"
    done = cli_proc("sweep", path, "--out", out, "--quiet")
    assert done.returncode == 3, done.stderr
    line = [x for x in done.stderr.splitlines() if "--retry-failed" in x][0]
    cmd = line.split("run them again: ")[1]
    assert cmd == f"crossbar-ep sweep {path} --out {out} --resume --retry-failed"
    again = cli_proc(*cmd.split()[1:])                     # the printed command works
    assert again.returncode == 3 and "1 already done, 1 to run" in again.stderr
    ok = write(tmp_path / "ok", {"seeds": [0]})
    assert cli_proc("sweep", ok, "--out", tmp_path / "ok" / "out", "--quiet").returncode == 0


# ---------------------------------------------------------------- (d) scheduler addresses
def _server(reply: bytes | None):
    """A TCP server on a free port that sends ``reply`` on connect (None: waits silently,
    like an HTTP server waiting for a request)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    conns = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            conns.append(c)
            if reply is not None:
                try:
                    c.sendall(reply)
                except OSError:
                    pass
    threading.Thread(target=serve, daemon=True).start()
    return srv, conns


@pytest.mark.parametrize("kind", ["silent-http", "http-reply", "huge-length", "bad-scheme",
                                  "bad-port", "no-port", "refused"])
def test_scheduler_that_is_not_dask_fails_fast_and_writes_nothing(tmp_path, capsys, kind):
    path = write(tmp_path, {"seeds": [0]})
    out = tmp_path / "out"
    srv = None
    if kind in ("silent-http", "http-reply", "huge-length"):
        reply = {"silent-http": None, "http-reply": b"HTTP/1.1 400 Bad Request\r\n\r\n",
                 "huge-length": b"\xff" * 16}[kind]
        srv, _ = _server(reply)
        addr = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    else:
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        addr = {"bad-scheme": f"http://127.0.0.1:{port}", "bad-port": "tcp://127.0.0.1:99999",
                "no-port": "tcp://127.0.0.1", "refused": f"tcp://127.0.0.1:{port}"}[kind]
    t = time.monotonic()
    try:
        rc = main(["sweep", str(path), "--out", str(out), "--scheduler", addr, "--quiet"])
    finally:
        if srv is not None:
            srv.close()
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and f"--scheduler {addr}" in err, err
    assert time.monotonic() - t < 30
    assert not (out / "points.json").exists() and not (out / "sweep.yaml").exists()
    if kind in ("silent-http", "http-reply", "huge-length"):
        assert "not a Dask scheduler" in err and "8786" in err


# ---------------------------------------------------------------- (e) Ctrl-C with one worker
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals a process group")
def test_ctrl_c_with_one_worker_prints_no_traceback(tmp_path):
    path = write(tmp_path, {"grid": {"training.lr": [0.1, 0.2]},
                            "set": {"training.epochs": 500}, "seeds": [0]})
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "crossbar_ep.cli", "sweep", str(path),
                             "--out", str(out), "--workers", "1", "--quiet"], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "points").glob("*/checkpoint.npz")) if (out / "points").is_dir() \
                else True:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)                 # a terminal's Ctrl-C: the group
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception" not in err, err
    assert f"--out {out} --resume" in err


# ---------------------------------------------------------------- tracebacks of item 11
def test_sweep_out_at_its_own_folder_or_a_file(tmp_path, capsys):
    path = write(tmp_path, {"seeds": [0]})
    rc = main(["sweep", str(path), "--out", str(tmp_path), "--quiet"])  # sweep.yaml is here
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    assert yaml.safe_load(path.read_text())["base"] == "base.yaml"       # the file is intact
    for target in (path, tmp_path / "base.yaml"):
        rc = main(["sweep", str(path), "--out", str(target), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err, err
        assert "is the sweep file itself" in err or "is a file, not a folder" in err, err


def test_damaged_results_table_and_points_list_are_rebuilt(tmp_path, capsys):
    path = write(tmp_path, {"grid": {"training.lr": [0.1, 0.2]}, "seeds": [0]})
    out = tmp_path / "out"
    rows = run_sweep(str(path), str(out), progress=False, log=quiet)
    first = table(out)
    assert len(rows) == 2 and first
    (out / "results.csv").write_bytes(b"point_id,status\n\xff\xfe\x00garbage\n")  # not UTF-8
    (out / "points.json").write_text("[{broken")
    rc = main(["sweep", str(path), "--out", str(out), "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    assert "results.damaged-1.csv" in err and "points.json is damaged" in err
    assert table(out) == first                        # rebuilt, nothing trained again
    assert (out / "results.damaged-1.csv").exists()


def test_corrupt_results_table_is_a_clear_error_for_readers(tmp_path):
    (tmp_path / "results.csv").write_bytes(b"\xff\xfe")
    with pytest.raises(CheckpointError, match="cannot read the results table"):
        read_results(str(tmp_path))

"""Non-ideality sweeps: many runs of one base experiment, on this machine or a Dask cluster.

A sweep file names a base experiment and what to vary by config key path (``docs/sweeps.md``)::

    base: mnist_3hl_crossbar.yaml
    set: {training.epochs: 2}                 # fixed for every point
    grid: {crossbar.periphery.adc_bits: [5, 7, 9], crossbar.device_params.n_states: [8, 64]}
    zip: {crossbar.device: [a.yaml, b.yaml], crossbar.update.lr: [0.1, 0.2]}
    random: {n: 4, seed: 0, params: {crossbar.periphery.read_noise: {log_uniform: [1e-3, 0.1]}}}
    seeds: [0, 1]                             # each sets training.seed and crossbar.seed
    reference: true                           # the ideal digital run per seed

Points are the product of the grid, the zipped rows, the random samples and the seeds.  Each
point trains in its own run directory under ``SWEEP_DIR/points/``; the results land in one tidy
table (``results.csv`` and ``results.h5``) that is rewritten as points finish, so Ctrl-C or a
crash loses no finished point and ``--resume`` runs only what is missing.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import os
import signal
import socket
import threading
import time
import traceback

import numpy as np

from crossbar_ep import __version__
from crossbar_ep.errors import CheckpointError, ConfigError
from crossbar_ep.io.files import atomic_copy, atomic_text, remove_stale_temps, temp_path
from crossbar_ep.io.lock import FolderLock
from crossbar_ep.runs.sweep_file import Point, Sweep, config_diff, load_sweep

RESULT_FILE = "results.csv"
RECORD_FILE = "sweep_record.json"   # what the points were planned from (checked on --resume)
LOCK = "sweep.lock"                 # held by the process running the sweep
EXIT_FAILED_POINTS = 3              # the CLI's exit status when points failed
METRIC_COLUMNS = ("best_test_acc", "best_epoch", "final_test_acc", "final_train_acc",
                  "epochs", "train_time_s", "pulses_total", "at_bound_mean")
META_COLUMNS = ("point_id", "kind", "status", "error", "seed", "config_hash", "version",
                "host", "started_utc", "duration_s", "run_dir")


# ---------------------------------------------------------------------- one point
def run_point(base: str, overrides: list, run_dir: str, point_id: str, kind: str) -> dict:
    """Train one point (resuming its own checkpoint if one exists); never raises: a failure
    becomes a row with status 'failed' and the error text.  Runs in a worker process."""
    from crossbar_ep.config.experiment import load_config
    from crossbar_ep.runs import train
    started = time.time()
    row = {"point_id": point_id, "kind": kind, "run_dir": run_dir, "host": socket.gethostname(),
           "version": __version__, "started_utc": datetime.datetime.now(
               datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        cfg = load_config(base, overrides)
        if os.path.exists(os.path.join(run_dir, train.CHECKPOINT)):
            run = train.resume(run_dir, epochs=cfg.training.epochs, expect=cfg)
        else:
            if os.path.isdir(run_dir):       # a point killed before its first checkpoint
                import shutil
                shutil.rmtree(run_dir)
            run = train.start(cfg, run_dir)
        s = train.fit(run, progress=False)
        h = run.history
        row.update(status="ok", error="", best_test_acc=s["best_test_acc"],
                   best_epoch=s["best_epoch"], final_test_acc=s["final_test_acc"],
                   final_train_acc=h[-1]["train_acc"], epochs=s["epochs"],
                   train_time_s=s["time_s"],
                   pulses_total=sum(r.get("pulses_total") or 0 for r in h),
                   at_bound_mean=h[-1].get("at_bound_mean"))
        for k, v in h[-1].items():          # later metrics (energy, settling time) ride along
            if k.startswith(("energy", "settle_time", "ir_drop")) and \
                    isinstance(v, (int, float)):
                row[k] = v
    except Exception as exc:  # noqa: BLE001 - a failed point is data, not a crash
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}".replace("\n", " "))
        row["traceback"] = traceback.format_exc(limit=5)
    row["duration_s"] = time.time() - started
    return row


# ---------------------------------------------------------------------- table
def read_results(sweep_dir: str) -> list:
    path = os.path.join(sweep_dir, RESULT_FILE)
    if not os.path.exists(path):
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CheckpointError(f"{path}: cannot read the results table ({exc})") from None
    if rows and not all(r.get("point_id") and r.get("status") for r in rows):
        raise CheckpointError(f"{path}: not a results table (rows without point_id or status)")
    return rows


def _readable_results(sweep_dir: str, log) -> list:
    """:func:`read_results`; a damaged table is set aside (``results.damaged-N.csv``) and
    the sweep rebuilds it: finished points read their results back from their run
    directories in a moment (their checkpoints hold every epoch)."""
    try:
        return read_results(sweep_dir)
    except CheckpointError as exc:
        path = os.path.join(sweep_dir, RESULT_FILE)
        n = 1
        while os.path.lexists(os.path.join(sweep_dir, f"results.damaged-{n}.csv")):
            n += 1
        kept = os.path.join(sweep_dir, f"results.damaged-{n}.csv")
        os.replace(path, kept)
        log(f"warning: {exc}; kept it as {kept} and rebuilding the table: finished points "
            f"report from their run directories without training again")
        return []


def _columns(sweep: Sweep, rows: list) -> list:
    extra = sorted({k for r in rows for k in r} - set(META_COLUMNS) - set(METRIC_COLUMNS)
                   - set(sweep.axes) - {"traceback"})
    return [*META_COLUMNS[:3], *sweep.axes, "seed", *METRIC_COLUMNS, *extra,
            *[c for c in META_COLUMNS[3:] if c != "seed"]]


def write_results(sweep: Sweep, sweep_dir: str, rows: list) -> None:
    """results.csv and results.h5 (same columns), sorted by point, written atomically."""
    rows = sorted(rows, key=lambda r: r["point_id"])
    cols = _columns(sweep, rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r[c]) for c in cols})
    atomic_text(os.path.join(sweep_dir, RESULT_FILE), buf.getvalue())

    import h5py
    final = os.path.join(sweep_dir, "results.h5")
    tmp = temp_path(sweep_dir, "results.h5")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["sweep"] = sweep.name
            f.attrs["sweep_file"] = sweep.source
            f.attrs["base"] = sweep.base
            f.attrs["crossbar_ep_version"] = __version__
            f.attrs["axes"] = json.dumps(sweep.axes)
            for c in cols:
                vals = [r.get(c) for r in rows]
                num = [_num(v) for v in vals]
                if all(v is not None for v in num) and any(v != "" for v in vals):
                    f.create_dataset(c, data=np.array(num, float))
                else:
                    f.create_dataset(c, data=np.array(["" if v is None else str(v)
                                                       for v in vals], dtype=object),
                                     dtype=h5py.string_dtype())
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _num(v):
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if v in ("", None):
        return np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------- stopping
@contextlib.contextmanager
def _stop_signals_set(event: threading.Event):
    """While inside, Ctrl-C (SIGINT) and SIGTERM (``kill``, a batch system ending the job)
    set ``event`` instead of raising anywhere: the sweep then stops its workers and raises
    KeyboardInterrupt, so a terminated sweep leaves no worker running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, lambda signum, frame: event.set())
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _row_of(p: Point, row: dict | None, failure: dict | None, sweep: Sweep,
            out_dir: str) -> dict:
    """The table row of a point that ended (a worker that died is a failed point)."""
    if row is None:
        row = {"point_id": p.point_id, "kind": p.kind, "status": "failed",
               "error": failure["error"].replace("\n", " "),
               "run_dir": os.path.join(out_dir, "points", p.point_id)}
        for k in ("signal", "peak_memory_MiB"):
            if failure.get(k) is not None:
                row[f"worker_{k}"] = failure[k]
    row.update({k: p.params.get(k) for k in sweep.axes})
    row["seed"] = p.seed
    row["config_hash"] = p.config_hash
    tb = row.pop("traceback", "") or (failure or {}).get("error", "")
    if tb:
        os.makedirs(row["run_dir"], exist_ok=True)
        atomic_text(os.path.join(row["run_dir"], "error.txt"), tb + "\n")
    return row


# ---------------------------------------------------------------------- resume checks


def _record(sweep: Sweep) -> dict:
    return {"sweep": json.loads(json.dumps(sweep.content, default=str)),
            "base_config": json.loads(json.dumps(sweep.base_config, default=str)),
            "cards": sweep.cards}


def _hash_then(record: dict | None, planned: dict | None, sweep: Sweep) -> str | None:
    """The hash this version gives a point as the recorded sweep planned it (its base config
    as resolved then, the overrides in its ``points.json`` entry ``planned``, the card
    contents then): keys added to crossbar-ep since take their defaults, which keep the
    behaviour they were added with, so they do not make a finished point stale.  None when
    the record cannot be replayed."""
    from crossbar_ep.config.experiment import apply_overrides, config_from_dict
    from crossbar_ep.errors import CrossbarEPError
    from crossbar_ep.runs.sweep_file import config_hash
    if not record or not isinstance(record.get("base_config"), dict) or \
            not isinstance(planned, dict) or not isinstance(planned.get("overrides"), list):
        return None
    try:
        raw = apply_overrides(json.loads(json.dumps(record["base_config"])),
                              [str(o) for o in planned["overrides"]])
        cfg = config_from_dict(raw, source=sweep.base)
        return config_hash(cfg, sweep.base, dict(record.get("cards") or {}))
    except (CrossbarEPError, TypeError, ValueError):
        return None


def _load_json(out_dir: str, name: str):
    """A JSON file of the sweep folder; None if missing or unreadable."""
    try:
        with open(os.path.join(out_dir, name), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _changed_points(sweep: Sweep, out_dir: str, accept: bool, rows: list, again: str,
                    log=print) -> set:
    """Before a resume: the ids of started or finished points whose config changed since.

    Refuses (ConfigError listing what changed and the command that accepts it) unless
    ``accept``.  A damaged ``points.json`` is rebuilt (the finished points are checked by
    the config hashes in the results table; a started point checks its own run directory
    when it resumes).  Nothing in the folder is touched here."""
    old = _load_json(out_dir, RECORD_FILE)
    listed = _load_json(out_dir, "points.json")
    if isinstance(listed, list) and all(isinstance(p, dict) for p in listed):
        planned = {p.get("point_id"): p for p in listed}
        old_hash = {k: p.get("config_hash") for k, p in planned.items()}
    else:
        if os.path.exists(os.path.join(out_dir, "points.json")):
            log(f"warning: {out_dir}/points.json is damaged; it is written again from the "
                f"sweep file, and finished points are checked against the config hashes in "
                f"{RESULT_FILE}")
        planned = {}
        old_hash = {r["point_id"]: r.get("config_hash") for r in rows}
    started = {r["point_id"] for r in rows}
    if os.path.isdir(os.path.join(out_dir, "points")):
        started |= set(os.listdir(os.path.join(out_dir, "points")))
    stale = {p.point_id for p in sweep.points if p.point_id in started
             and (p.point_id in planned or old_hash.get(p.point_id))
             and old_hash.get(p.point_id) != p.config_hash
             and _hash_then(old, planned.get(p.point_id), sweep) != p.config_hash}
    if old is None:
        if not started:
            return stale
        lines = [f"{RECORD_FILE} is missing: this folder was made by an older crossbar-ep (or "
                 f"is not a sweep folder), so its points cannot be checked"]
    else:
        new = _record(sweep)
        lines = config_diff(old.get("sweep", {}), new["sweep"])
        if stale:
            lines += config_diff(old.get("base_config", {}), new["base_config"], "base: ")
            cards = old.get("cards", {})
            lines += [f"device card {c}: contents changed" for c in sorted(new["cards"])
                      if c in cards and cards[c] != new["cards"][c]]
            lines = lines or ["the resolved configs differ (crossbar-ep's defaults changed?)"]
    if not lines or accept:
        return stale
    shown = lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else [])
    fresh = f"{again.split(' --out ')[0]} --out {out_dir.rstrip(os.sep)}-new"
    if stale:
        what = (f"{len(stale)} started or finished point{'' if len(stale) == 1 else 's'} "
                f"would be reused with another config")
        fix = (f"Add --accept-config-changes to rerun the changed points from scratch "
               f"(unchanged points keep their results): {again} --accept-config-changes; or "
               f"start the sweep in a new folder: {fresh}")
    else:
        what = "its finished points' configs are unchanged"
        fix = (f"Add --accept-config-changes to accept the edit (no finished point reruns): "
               f"{again} --accept-config-changes; or start the sweep in a new folder: {fresh}")
    raise ConfigError(f"{out_dir}: {sweep.source} no longer matches the sweep in this folder "
                      f"({what}):\n  " + "\n  ".join(shown) + "\n" + fix)


# ---------------------------------------------------------------------- run
def resume_command(path: str, out_dir: str, workers: int = 1, scheduler: str | None = None,
                   dask_local: int | None = None, *extra: str) -> str:
    """The shell command that continues this sweep (``extra``: more flags)."""
    import shlex
    again = ["crossbar-ep", "sweep", path, "--out", out_dir, "--resume"]
    if scheduler:
        again += ["--scheduler", scheduler]
    elif dask_local:
        again += ["--dask-local", str(dask_local)]
    elif workers > 1:
        again += ["--workers", str(workers)]
    return " ".join(shlex.quote(a) for a in [*again, *extra])


def _open_folder(out_dir: str) -> FolderLock:
    """Create the sweep folder and take its lock (one sweep per folder)."""
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out_dir}: is a file, not a folder; choose a new folder for "
                          f"the sweep")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot create the sweep folder "
                          f"({exc.strerror or exc}); choose a writable place") from None
    return FolderLock(out_dir, LOCK, "sweep folder",
                      fix="wait for that sweep to finish or stop it, or choose another --out",
                      unwritable="choose a writable --out")


def run_sweep(path: str, out_dir: str, workers: int = 1, scheduler: str | None = None,
              dask_local: int | None = None, resume: bool = False, retry_failed: bool = False,
              progress: bool = True, log=print, accept_changes: bool = False,
              sweep: Sweep | None = None) -> list:
    """Run (or resume) every point of a sweep file; returns the result rows.

    The sweep folder is locked while the sweep runs.  A worker process that dies (the
    out-of-memory killer) fails its point, recorded with the signal and its peak memory; a
    new worker takes the next point.  Ctrl-C stops the workers at once and raises
    KeyboardInterrupt; every finished point is in the table and ``resume=True`` runs the
    rest.  A resume refuses a sweep whose points changed since unless ``accept_changes``
    (then the changed points rerun from scratch).  A Dask scheduler is checked before
    anything is written."""
    import shutil

    from crossbar_ep.runs.progress import progress_bar
    from crossbar_ep.runs.sweep_pool import DaskPool, LocalPool
    sweep = sweep or load_sweep(path)
    again = resume_command(path, out_dir, workers, scheduler, dask_local)
    if os.path.isfile(out_dir) and os.path.samefile(out_dir, sweep.source):
        raise ConfigError(f"--out {out_dir}: is the sweep file itself; give a folder")
    lock = _open_folder(out_dir)
    try:
        remove_stale_temps(out_dir, everything=True)    # left by a killed sweep: ours now
        held = [f for f in (RESULT_FILE, "points.json")
                if os.path.exists(os.path.join(out_dir, f))]
        if held and not resume:
            raise ConfigError(f"{out_dir}: already holds a sweep; add --resume to continue "
                              f"it: {again}; or choose another --out")
        before = _readable_results(out_dir, log) if held else []
        stale = _changed_points(sweep, out_dir, accept_changes, before, again, log) \
            if held else set()
        pool = DaskPool(scheduler, dask_local) if (scheduler or dask_local) else \
            LocalPool(workers)
        ids = {p.point_id for p in sweep.points}
        done = {r["point_id"]: r for r in before}
        gone = [i for i in done if i not in ids]
        if gone:
            log(f"{len(gone)} rows of points no longer in the sweep leave the table (their "
                f"run directories stay in {out_dir}/points)")
        for pid in stale:
            log(f"point {pid}: its config changed; it runs again from scratch")
            shutil.rmtree(os.path.join(out_dir, "points", pid), ignore_errors=True)
        done = {i: r for i, r in done.items() if i in ids and i not in stale}
        os.makedirs(os.path.join(out_dir, "points"), exist_ok=True)
        atomic_copy(sweep.source, os.path.join(out_dir, "sweep.yaml"))
        atomic_text(os.path.join(out_dir, "points.json"), json.dumps(
            [{"point_id": p.point_id, "kind": p.kind, "params": p.params, "seed": p.seed,
              "overrides": p.overrides, "config_hash": p.config_hash} for p in sweep.points],
            indent=1, default=str))
        atomic_text(os.path.join(out_dir, RECORD_FILE), json.dumps(_record(sweep), indent=1))
        todo = [p for p in sweep.points if p.point_id not in done or
                (retry_failed and done[p.point_id]["status"] != "ok")]
        rows = [dict(r) for i, r in done.items() if i not in {p.point_id for p in todo}]
        log(f"sweep {sweep.name}: {len(sweep.points)} points, {len(sweep.points) - len(todo)} "
            f"already done, {len(todo)} to run -> {out_dir}")
        write_results(sweep, out_dir, rows)
        if not todo:
            pool.close()
            return rows
        _run_points(pool, sweep, out_dir, todo, rows, log,
                    progress_bar(len(todo), f"sweep {sweep.name}", "point") if progress
                    else None)
        return rows
    finally:
        lock.release()


def _run_points(pool, sweep: Sweep, out_dir: str, todo: list, rows: list, log, bar) -> None:
    by_id = {p.point_id: p for p in todo}
    stop = threading.Event()

    def record(key, row, failure):
        rows.append(_row_of(by_id[key], row, failure, sweep, out_dir))
        if rows[-1]["status"] != "ok":
            log(f"point {key} failed: {rows[-1]['error']}")
        write_results(sweep, out_dir, rows)
        if bar is not None:
            bar.update(1)

    tasks = [(p.point_id, (sweep.base, p.overrides, os.path.join(out_dir, "points",
                                                                 p.point_id), p.point_id,
                           p.kind)) for p in todo]
    clean = False
    try:
        with _stop_signals_set(stop):
            pool.run(tasks, record, stop)
        clean = True
    finally:
        if bar is not None:
            bar.close()
        if not stop.is_set():
            pool.close() if clean else pool.stop()
    if stop.is_set():
        raise KeyboardInterrupt

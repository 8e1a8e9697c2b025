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
import queue
import signal
import socket
import threading
import time
import traceback

import numpy as np

from crossbar_ep import __version__
from crossbar_ep.errors import ConfigError
from crossbar_ep.runs.sweep_file import Point, Sweep, _diff, load_sweep

RESULT_FILE = "results.csv"
RECORD_FILE = "sweep_record.json"   # what the points were planned from (checked on --resume)
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
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _columns(sweep: Sweep, rows: list) -> list:
    extra = sorted({k for r in rows for k in r} - set(META_COLUMNS) - set(METRIC_COLUMNS)
                   - set(sweep.axes) - {"traceback"})
    return [*META_COLUMNS[:3], *sweep.axes, "seed", *METRIC_COLUMNS, *extra,
            *[c for c in META_COLUMNS[3:] if c != "seed"]]


def write_results(sweep: Sweep, sweep_dir: str, rows: list) -> None:
    """results.csv and results.h5 (same columns), sorted by point, written atomically."""
    from crossbar_ep.io.files import atomic_text as _atomic_text
    rows = sorted(rows, key=lambda r: r["point_id"])
    cols = _columns(sweep, rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r[c]) for c in cols})
    _atomic_text(os.path.join(sweep_dir, RESULT_FILE), buf.getvalue())

    import h5py
    final = os.path.join(sweep_dir, "results.h5")
    tmp = os.path.join(sweep_dir, ".tmp-results.h5")
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


# ---------------------------------------------------------------------- executors
def _init_worker() -> None:
    """Ctrl-C belongs to the main process (it stops the workers); SIGTERM from it unwinds the
    point, so files close, and ends the worker (see :func:`_run_point_in_worker`).  A worker
    whose main process is gone without stopping it (killed by SIGKILL, or crashed) sends
    itself that SIGTERM within a second: no orphan keeps computing and holding its point's
    run directory."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    parent = os.getppid()
    threading.Thread(target=_end_with_parent, args=(parent,), daemon=True,
                     name="crossbar-ep-orphan-guard").start()


def _end_with_parent(parent: int, every_s: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os.kill(os.getpid(), signal.SIGTERM)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _run_point_in_worker(*args) -> dict:
    try:
        return run_point(*args)
    except SystemExit:              # stopped by the sweep: leave, do not take another point
        os._exit(143)


class _Local:
    """A process pool on this machine; BLAS threads split between the workers."""

    def __init__(self, workers: int):
        import concurrent.futures as cf
        import multiprocessing as mp
        cores = os.cpu_count() or 1
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(max(1, cores // workers)))
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                           mp_context=mp.get_context("spawn"))
        self.unspawned = workers

    def submit(self, *args):
        if not self.unspawned or threading.current_thread() is not threading.main_thread():
            return self.pool.submit(_run_point_in_worker, *args)
        # this submit starts a worker process: it inherits an ignored Ctrl-C, so a Ctrl-C
        # while it starts up does not kill it with a traceback
        self.unspawned -= 1
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return self.pool.submit(_run_point_in_worker, *args)
        finally:
            signal.signal(signal.SIGINT, old)

    def stop(self, futures, grace: float = 3.0) -> None:
        """Cancel what has not started and end the running points now: SIGTERM, then after
        ``grace`` seconds SIGKILL.  A killed point resumes from its last checkpoint."""
        for f in futures:
            f.cancel()
        procs = list((getattr(self.pool, "_processes", None) or {}).values())  # no public API
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + grace
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def close(self):
        self.pool.shutdown(wait=True)


class _Dask:
    """An existing Dask scheduler (``tcp://host:8786``) or a LocalCluster of N workers."""

    def __init__(self, address: str | None, n_local: int | None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("Dask scheduling needs dask.distributed: pip install "
                              "'dask[distributed]'") from None
        self.cluster = None
        if address:
            try:
                self.client = Client(address, timeout="20s")
            except OSError as exc:
                raise ConfigError(f"--scheduler {address}: cannot reach the Dask scheduler "
                                  f"({exc})") from None
        else:
            self.cluster = LocalCluster(n_workers=n_local, threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)

    def submit(self, *args):
        return self.client.submit(run_point, *args, pure=False)

    def stop(self, futures) -> None:
        """Cancel every point; a LocalCluster's worker processes end with it.  A point
        already running on a remote cluster finishes there (Dask cannot interrupt it)."""
        try:
            self.client.cancel(list(futures), force=True)
        finally:
            self.close()

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


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


def _row_of(fut, p: Point, sweep: Sweep, out_dir: str) -> dict:
    """The result row of a finished future (a worker that died is a failed point)."""
    from crossbar_ep.io.files import atomic_text as _atomic_text
    exc = fut.exception()
    if exc is not None:
        row = {"point_id": p.point_id, "kind": p.kind, "status": "failed",
               "error": f"{type(exc).__name__}: {exc}".replace("\n", " "),
               "run_dir": os.path.join(out_dir, "points", p.point_id)}
    else:
        row = fut.result()
    row.update({k: p.params.get(k) for k in sweep.axes})
    row["seed"] = p.seed
    row["config_hash"] = p.config_hash
    tb = row.pop("traceback", "")
    if tb:
        os.makedirs(row["run_dir"], exist_ok=True)
        _atomic_text(os.path.join(row["run_dir"], "error.txt"), tb)
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


def _changed_points(sweep: Sweep, out_dir: str, accept: bool) -> set:
    """Before a resume: the ids of started or finished points whose config changed since.

    Refuses (ConfigError listing what changed) unless ``accept``.  Nothing in the folder is
    touched here."""
    def load(name, default):
        try:
            with open(os.path.join(out_dir, name), encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return default
    old = load(RECORD_FILE, None)
    planned = {p.get("point_id"): p for p in load("points.json", []) if isinstance(p, dict)}
    old_hash = {k: p.get("config_hash") for k, p in planned.items()}
    started = {r["point_id"] for r in read_results(out_dir)}
    if os.path.isdir(os.path.join(out_dir, "points")):
        started |= set(os.listdir(os.path.join(out_dir, "points")))
    stale = {p.point_id for p in sweep.points if p.point_id in started
             and old_hash.get(p.point_id) != p.config_hash
             and _hash_then(old, planned.get(p.point_id), sweep) != p.config_hash}
    if old is None:
        if not started:
            return stale
        lines = [f"{RECORD_FILE} is missing: this folder was made by an older crossbar-ep (or "
                 f"is not a sweep folder), so its points cannot be checked"]
    else:
        new = _record(sweep)
        lines = _diff(old.get("sweep", {}), new["sweep"])
        if stale:
            lines += _diff(old.get("base_config", {}), new["base_config"], "base: ")
            cards = old.get("cards", {})
            lines += [f"device card {c}: contents changed" for c in sorted(new["cards"])
                      if c in cards and cards[c] != new["cards"][c]]
            lines = lines or ["the resolved configs differ (crossbar-ep's defaults changed?)"]
    if not lines or accept:
        return stale
    shown = lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else [])
    if stale:
        what = (f"{len(stale)} started or finished point{'' if len(stale) == 1 else 's'} "
                f"would be reused with another config")
        fix = ("Add --accept-config-changes to rerun the changed points from scratch "
               "(unchanged points keep their results), or choose another --out.")
    else:
        what = "its finished points' configs are unchanged"
        fix = ("Add --accept-config-changes to accept the edit (no finished point reruns), or "
               "choose another --out.")
    raise ConfigError(f"{out_dir}: {sweep.source} no longer matches the sweep in this folder "
                      f"({what}):\n  " + "\n  ".join(shown) + "\n" + fix)


# ---------------------------------------------------------------------- run
def run_sweep(path: str, out_dir: str, workers: int = 1, scheduler: str | None = None,
              dask_local: int | None = None, resume: bool = False, retry_failed: bool = False,
              progress: bool = True, log=print, accept_changes: bool = False,
              sweep: Sweep | None = None) -> list:
    """Run (or resume) every point of a sweep file; returns the result rows.

    Ctrl-C stops the workers at once and raises KeyboardInterrupt; every finished point is
    in the table and ``resume=True`` runs the rest.  A resume refuses a sweep whose points
    changed since unless ``accept_changes`` (then the changed points rerun from scratch)."""
    import shutil

    from crossbar_ep.io.files import atomic_text as _atomic_text
    sweep = sweep or load_sweep(path)
    held = [f for f in (RESULT_FILE, "points.json") if os.path.exists(os.path.join(out_dir, f))]
    if held and not resume:
        raise ConfigError(f"{out_dir}: already holds a sweep; add --resume to continue it, or "
                          f"choose another --out")
    stale = _changed_points(sweep, out_dir, accept_changes) if held else set()
    ids = {p.point_id for p in sweep.points}
    done = {r["point_id"]: r for r in read_results(out_dir)}
    gone = [i for i in done if i not in ids]
    if gone:
        log(f"{len(gone)} rows of points no longer in the sweep leave the table (their run "
            f"directories stay in {out_dir}/points)")
    for pid in stale:
        log(f"point {pid}: its config changed; it runs again from scratch")
        shutil.rmtree(os.path.join(out_dir, "points", pid), ignore_errors=True)
    done = {i: r for i, r in done.items() if i in ids and i not in stale}
    os.makedirs(os.path.join(out_dir, "points"), exist_ok=True)
    shutil.copyfile(sweep.source, os.path.join(out_dir, "sweep.yaml"))
    _atomic_text(os.path.join(out_dir, "points.json"), json.dumps(
        [{"point_id": p.point_id, "kind": p.kind, "params": p.params, "seed": p.seed,
          "overrides": p.overrides, "config_hash": p.config_hash} for p in sweep.points],
        indent=1, default=str))
    _atomic_text(os.path.join(out_dir, RECORD_FILE), json.dumps(_record(sweep), indent=1))
    todo = [p for p in sweep.points
            if p.point_id not in done or (retry_failed and done[p.point_id]["status"] != "ok")]
    rows = [dict(r) for i, r in done.items() if i not in {p.point_id for p in todo}]
    log(f"sweep {sweep.name}: {len(sweep.points)} points, {len(sweep.points) - len(todo)} "
        f"already done, {len(todo)} to run -> {out_dir}")
    write_results(sweep, out_dir, rows)
    if not todo:
        return rows
    ex = _Dask(scheduler, dask_local) if (scheduler or dask_local) else _Local(workers)
    bar = None
    if progress:
        import sys

        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=f"sweep {sweep.name}", unit="point", file=sys.stderr)
    finished, stop, futures = queue.Queue(), threading.Event(), {}
    clean = False

    def record(fut):
        rows.append(_row_of(fut, futures[fut], sweep, out_dir))
        if rows[-1]["status"] != "ok":
            log(f"point {rows[-1]['point_id']} failed: {rows[-1]['error']}")
        write_results(sweep, out_dir, rows)
        if bar is not None:
            bar.update(1)
    try:
        with _stop_signals_set(stop):
            for p in todo:
                if stop.is_set():
                    break
                fut = ex.submit(sweep.base, p.overrides,
                                os.path.join(out_dir, "points", p.point_id), p.point_id, p.kind)
                futures[fut] = p
                fut.add_done_callback(finished.put)
            left = len(futures)
            while left and not stop.is_set():
                try:
                    fut = finished.get(timeout=0.2)
                except queue.Empty:
                    continue
                if stop.is_set():           # a worker that died of the same Ctrl-C
                    finished.put(fut)
                    break
                left -= 1
                record(fut)
            if stop.is_set():
                ex.stop(futures)
                while not finished.empty():     # points that finished as the sweep stopped
                    fut = finished.get()
                    if not fut.cancelled() and fut.exception() is None:
                        record(fut)
                raise KeyboardInterrupt
        clean = True
    finally:
        if bar is not None:
            bar.close()
        if clean:
            ex.close()
        elif not stop.is_set():
            ex.stop(futures)    # an error in the main process: stop the workers too
    return rows

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

import csv
import datetime
import hashlib
import io
import itertools
import json
import os
import socket
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .config import apply_overrides, config_from_dict, read_yaml
from .errors import ConfigError

SWEEP_KEYS = ("name", "description", "base", "set", "grid", "zip", "random", "seeds",
              "reference")
RESULT_FILE = "results.csv"
METRIC_COLUMNS = ("best_test_acc", "best_epoch", "final_test_acc", "final_train_acc",
                  "epochs", "train_time_s", "pulses_total", "at_bound_mean")
META_COLUMNS = ("point_id", "kind", "status", "error", "seed", "config_hash", "version",
                "host", "started_utc", "duration_s", "run_dir")


@dataclass
class Point:
    """One run of the sweep: the varied values (path -> value) and its seed."""

    index: int
    params: dict
    seed: int | None
    kind: str = "point"          # or "reference": the ideal digital run of the base
    overrides: list = field(default_factory=list)

    @property
    def point_id(self) -> str:
        text = json.dumps([self.kind, self.params, self.seed], sort_keys=True, default=str)
        return f"p{self.index:04d}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


@dataclass
class Sweep:
    name: str
    source: str
    base: str                    # absolute path of the base experiment
    fixed: dict
    axes: list                   # varied key paths, in order
    points: list


def _fail(source: str, path: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {path}: {msg}")


def _as_override(path: str, value) -> str:
    return f"{path}={json.dumps(value)}"


def _resolve_paths(path: str, value, folder: str):
    """Device cards and data dirs given relative to the sweep file become absolute."""
    if path in ("crossbar.device", "data.dir") and isinstance(value, str) \
            and not os.path.isabs(value):
        cand = os.path.join(folder, value)
        if os.path.exists(cand):
            return os.path.abspath(cand)
        if os.path.exists(value):
            return os.path.abspath(value)
    return value


def _draw(spec, rng: np.random.Generator, where: str, source: str):
    if not isinstance(spec, dict) or len(spec) != 1:
        raise _fail(source, where, "give one of {uniform: [lo, hi]}, {log_uniform: [lo, hi]}, "
                                   "{int: [lo, hi]}, {choice: [a, b, ...]}")
    (kind, arg), = spec.items()
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise _fail(source, f"{where}.choice", "needs a non-empty list")
        return arg[int(rng.integers(len(arg)))]
    if kind not in ("uniform", "log_uniform", "int"):
        raise _fail(source, where, f"unknown distribution {kind!r} (uniform, log_uniform, int, "
                                   f"choice)")
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, (int, float))
                                                             for a in arg) and arg[0] < arg[1]):
        raise _fail(source, f"{where}.{kind}", "needs [lo, hi] with lo < hi")
    lo, hi = arg
    if kind == "uniform":
        return float(rng.uniform(lo, hi))
    if kind == "int":
        return int(rng.integers(int(lo), int(hi) + 1))
    if lo <= 0:
        raise _fail(source, f"{where}.log_uniform", "needs lo > 0")
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def load_sweep(path: str) -> Sweep:
    """Read and validate a sweep file; every point's config is checked before anything runs."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep file must be a mapping (base, grid, zip, random, "
                          f"seeds, ...)")
    for k in raw:
        if k not in SWEEP_KEYS:
            import difflib
            close = difflib.get_close_matches(str(k), SWEEP_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise _fail(path, str(k), f"unknown key; {hint}(allowed: {', '.join(SWEEP_KEYS)})")
    folder = os.path.dirname(os.path.abspath(path))
    if "base" not in raw or not isinstance(raw["base"], str):
        raise _fail(path, "base", "missing: name the base experiment file")
    base = raw["base"] if os.path.isabs(raw["base"]) else os.path.join(folder, raw["base"])
    if not os.path.isfile(base):
        raise _fail(path, "base", f"{base}: no such experiment file")
    sections = {}
    for sec in ("set", "grid", "zip"):
        v = raw.get(sec) or {}
        if not isinstance(v, dict):
            raise _fail(path, sec, "expected a mapping of key paths")
        sections[sec] = v
    seen = {}
    for sec in ("set", "grid", "zip"):
        for key in sections[sec]:
            if key in seen:
                raise _fail(path, f"{sec}.{key}", f"also set in {seen[key]}: a key may be "
                                                  f"varied (or fixed) in one place only")
            seen[key] = sec
    for key, vals in {**sections["grid"], **sections["zip"]}.items():
        sec = seen[key]
        if not isinstance(vals, list) or not vals:
            raise _fail(path, f"{sec}.{key}", "needs a non-empty list of values")
    zip_lens = {len(v) for v in sections["zip"].values()}
    if len(zip_lens) > 1:
        raise _fail(path, "zip", f"lists have different lengths {sorted(zip_lens)}; zipped "
                                 f"keys vary together and need equal lengths")
    rand = raw.get("random") or {}
    rand_params = {}
    if rand:
        if not isinstance(rand, dict) or "params" not in rand or not rand["params"]:
            raise _fail(path, "random", "needs params: {key.path: {distribution: ...}} and n")
        n = rand.get("n")
        if not isinstance(n, int) or n < 1:
            raise _fail(path, "random.n", "needs a positive integer (samples)")
        for key in rand["params"]:
            if key in seen:
                raise _fail(path, f"random.params.{key}", f"also set in {seen[key]}")
            seen[key] = "random"
        rand_params = rand["params"]
    seeds = raw.get("seeds", [None])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(
            s is None or (isinstance(s, int) and s >= 0) for s in seeds):
        raise _fail(path, "seeds", "needs a non-empty list of non-negative integers")
    for reserved in ("training.seed", "crossbar.seed"):
        if reserved in seen and seeds != [None]:
            raise _fail(path, f"{seen[reserved]}.{reserved}", "conflicts with seeds: "
                                                               "seeds set it")

    fixed = {k: _resolve_paths(k, v, folder) for k, v in sections["set"].items()}
    grid = {k: [_resolve_paths(k, x, folder) for x in v] for k, v in sections["grid"].items()}
    zipped = {k: [_resolve_paths(k, x, folder) for x in v] for k, v in sections["zip"].items()}
    combos = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())] or [{}]
    zrows = ([dict(zip(zipped, vals)) for vals in zip(*zipped.values())] if zipped else [{}])
    rrows = [{}]
    if rand_params:
        rng = np.random.default_rng(rand.get("seed", 0))
        rrows = [{k: _resolve_paths(k, _draw(spec, rng, f"random.params.{k}", path), folder)
                  for k, spec in rand_params.items()} for _ in range(rand["n"])]
    axes = [*grid, *zipped, *rand_params]
    points = []
    base_raw = read_yaml(base)
    for params in (dict(**g, **z, **r) for g in combos for z in zrows for r in rrows):
        for seed in seeds:
            points.append(Point(len(points), params, seed))
    if raw.get("reference"):
        for seed in seeds:
            points.append(Point(len(points), {}, seed, kind="reference"))
    for p in points:
        ov = [_as_override(k, v) for k, v in fixed.items()]
        ov += [_as_override(k, v) for k, v in p.params.items()]
        if p.seed is not None:
            ov += [f"training.seed={p.seed}", f"crossbar.seed={p.seed}"]
        if p.kind == "reference":
            ov += ["crossbar.enabled=false", "traces.tiles=[]"]
        p.overrides = ov
        try:
            config_from_dict(apply_overrides(base_raw, ov), base)
        except ConfigError as exc:
            where = ", ".join(f"{k}={v!r}" for k, v in p.params.items()) or p.kind
            raise ConfigError(f"{path}: point {p.index} ({where}): {exc}") from None
    name = raw.get("name") or os.path.splitext(os.path.basename(path))[0]
    return Sweep(str(name), os.path.abspath(path), os.path.abspath(base), fixed, axes, points)


# ---------------------------------------------------------------------- one point
def run_point(base: str, overrides: list, run_dir: str, point_id: str, kind: str) -> dict:
    """Train one point (resuming its own checkpoint if one exists); never raises: a failure
    becomes a row with status 'failed' and the error text.  Runs in a worker process."""
    from . import train
    from .config import load_config
    started = time.time()
    row = {"point_id": point_id, "kind": kind, "run_dir": run_dir, "host": socket.gethostname(),
           "version": __version__, "started_utc": datetime.datetime.now(
               datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        cfg = load_config(base, overrides)
        import yaml
        row["config_hash"] = hashlib.sha1(yaml.safe_dump(cfg.to_dict(), sort_keys=True)
                                          .encode()).hexdigest()[:12]
        if os.path.exists(os.path.join(run_dir, train.CHECKPOINT)):
            run = train.resume(run_dir, epochs=cfg.training.epochs)
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
    from .train import _atomic_text
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
class _Local:
    """A process pool on this machine; BLAS threads split between the workers."""

    def __init__(self, workers: int):
        import concurrent.futures as cf
        import multiprocessing as mp
        cores = os.cpu_count() or 1
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(max(1, cores // workers)))
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))
        self.pool = cf.ProcessPoolExecutor(max_workers=workers,
                                           mp_context=mp.get_context("spawn"))
        self.cf = cf

    def submit(self, *args):
        return self.pool.submit(run_point, *args)

    def as_completed(self, futures):
        return self.cf.as_completed(futures)

    def close(self, cancel: bool = False):
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class _Dask:
    """An existing Dask scheduler (``tcp://host:8786``) or a LocalCluster of N workers."""

    def __init__(self, address: str | None, n_local: int | None):
        try:
            from distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise ConfigError("Dask scheduling needs dask.distributed: pip install "
                              "'dask[distributed]'") from None
        self._as_completed = as_completed
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

    def as_completed(self, futures):
        return self._as_completed(futures)

    def close(self, cancel: bool = False):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def run_sweep(path: str, out_dir: str, workers: int = 1, scheduler: str | None = None,
              dask_local: int | None = None, resume: bool = False, retry_failed: bool = False,
              progress: bool = True, log=print) -> list:
    """Run (or resume) every point of a sweep file; returns the result rows."""
    from .train import _atomic_text
    sweep = load_sweep(path)
    if os.path.exists(os.path.join(out_dir, RESULT_FILE)) and not resume:
        raise ConfigError(f"{out_dir}: already holds a sweep; add --resume to continue it, or "
                          f"choose another --out")
    os.makedirs(os.path.join(out_dir, "points"), exist_ok=True)
    import shutil
    shutil.copyfile(sweep.source, os.path.join(out_dir, "sweep.yaml"))
    _atomic_text(os.path.join(out_dir, "points.json"), json.dumps(
        [{"point_id": p.point_id, "kind": p.kind, "params": p.params, "seed": p.seed,
          "overrides": p.overrides} for p in sweep.points], indent=1, default=str))
    done = {r["point_id"]: r for r in read_results(out_dir)}
    rows = [dict(r) for r in done.values()]
    todo = [p for p in sweep.points
            if p.point_id not in done or (retry_failed and done[p.point_id]["status"] != "ok")]
    rows = [r for r in rows if r["point_id"] not in {p.point_id for p in todo}]
    by_id = {p.point_id: p for p in sweep.points}
    log(f"sweep {sweep.name}: {len(sweep.points)} points, {len(sweep.points) - len(todo)} "
        f"already done, {len(todo)} to run -> {out_dir}")
    if not todo:
        write_results(sweep, out_dir, rows)
        return rows
    ex = _Dask(scheduler, dask_local) if (scheduler or dask_local) else _Local(workers)
    bar = None
    if progress:
        import sys

        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=f"sweep {sweep.name}", unit="point", file=sys.stderr)
    cancelled = False
    try:
        futures = [ex.submit(sweep.base, p.overrides,
                             os.path.join(out_dir, "points", p.point_id), p.point_id, p.kind)
                   for p in todo]
        for fut in ex.as_completed(futures):
            row = fut.result()
            p = by_id[row["point_id"]]
            row.update({k: p.params.get(k) for k in sweep.axes})
            row["seed"] = p.seed
            if row["status"] != "ok":
                log(f"point {row['point_id']} failed: {row['error']}")
                tb = row.pop("traceback", "")
                os.makedirs(row["run_dir"], exist_ok=True)
                _atomic_text(os.path.join(row["run_dir"], "error.txt"), tb)
            rows.append(row)
            write_results(sweep, out_dir, rows)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        cancelled = True
        raise
    finally:
        if bar is not None:
            bar.close()
        ex.close(cancel=cancelled)
    return rows

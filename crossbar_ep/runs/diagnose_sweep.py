"""``crossbar-ep diagnose-sweep SWEEP.yaml``: the dynamics of every point of a sweep, at
initialisation and after training.

The sweep file is an ordinary one (docs/sweeps.md: base, set, grid, zip, seeds).  Each point
is built, measured with its initial weights, trained for ``training.epochs`` (0: no training)
in its own run directory ``OUT/points/<id>/``, and measured again.  A measurement, on the
first ``samples`` training images (one batch, as the authors' code), gives the coupling's
spectral radius, the FTMLE over the config's T steps, the convergence steps (cap ``cap_init``
before training, ``cap_trained`` after), and the cosine between the EP update and the BP
gradient of every trained matrix (:mod:`crossbar_ep.model.dynamics_measures`).  One row per
(point, phase) goes to ``OUT/dynamics.csv``, written after every point, so an interrupted
sweep continues where it stopped (finished points are skipped, a half-trained one resumes
from its checkpoint).  With ``trajectory_units`` > 0 the settling trajectories of the first
sample (that many units of every hidden layer, and ||s_t - s_{t-1}||) go to
``OUT/trajectories.csv``.
"""

from __future__ import annotations

import csv
import math
import os
import time

import numpy as np

from crossbar_ep.errors import CrossbarEPError

RESULTS, TRAJECTORIES = "dynamics.csv", "trajectories.csv"




def _beta(cfg) -> float:
    b = cfg.model.beta_i
    return float(b[0]) if isinstance(b, (list, tuple)) else float(b)


def measure(run, phase: str, samples: int, cap: int, tol: float = 1e-6,
            trajectory_units: int = 0) -> tuple[dict, list]:
    """One row of measures of ``run``'s net as it stands, and its trajectory rows."""
    from crossbar_ep.model.dynamics_measures import (
        ep_bp_cosines,
        settle_measures,
        spectral_radius,
    )
    from crossbar_ep.model.learners import one_hot
    cfg, net = run.cfg, run.net
    t0 = time.time()
    x = run.data.x_train[:samples]
    y = run.data.y_train[:samples]
    T = cfg.training.T
    record = None
    if trajectory_units > 0:
        off = np.concatenate([[0], np.cumsum(net.sizes[1:net.L + 1])])
        record = np.concatenate([np.arange(off[k], off[k] + min(trajectory_units,
                                                                net.sizes[k + 1]))
                                 for k in range(net.L)])
    st = settle_measures(net, x, cap, T, tol=tol, seed=cfg.training.seed, record=record)
    row = {"phase": phase, "seed": cfg.training.seed, "feedback": cfg.model.feedback,
           "hidden": "x".join(map(str, cfg.model.hidden)), "beta_i": _beta(cfg),
           "alpha": cfg.model.alpha, "residual": cfg.model.residual.kind,
           "residual_p": cfg.model.residual.p, "T": T, "K": cfg.training.K,
           "epochs": run.epochs_done, "samples": x.shape[0],
           "spectral_radius": spectral_radius(net), "ftmle": st.ftmle(T), "ftmle_steps": T,
           "conv_steps": st.conv_steps_mean(), "conv_fraction": float(st.converged.mean()),
           "conv_cap": cap, "steps_run": st.steps_run}
    if cfg.training.algorithm == "ep":
        y1h = one_hot(y, net.sizes[-1], net.dtype)
        for name, c in ep_bp_cosines(net, run.learner, x, y1h).items():
            row[f"cos_{name}"] = c
    h = run.history
    if h:
        row.update(test_acc_best=max(r["test_acc"] for r in h),
                   test_acc_final=h[-1]["test_acc"], train_acc_final=h[-1]["train_acc"])
    row["measure_s"] = time.time() - t0
    traj = []
    if record is not None:
        for t in range(st.steps_run):
            r = {"phase": phase, "step": t + 1, "dnorm": st.dnorm[t]}
            r.update({f"u{int(i)}": v for i, v in zip(record, st.trajectory[t])})
            traj.append(r)
    return row, traj


def read_rows(path: str) -> list:
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path: str, rows: list, first: tuple = ()) -> None:
    """CSV with the ``first`` columns, then every other column in order of appearance."""
    cols = list(first)
    for r in rows:
        cols += [k for k in r if k not in cols]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, cols, restval="", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(v) for k, v in r.items()})
    os.replace(tmp, path)


def _cell(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def run_diagnose_sweep(sweep_file: str, out_dir: str, samples: int = 500,
                       cap_init: int = 500, cap_trained: int = 1000, tol: float = 1e-6,
                       trajectory_units: int = 0, log=print) -> list:
    """Measure every point of ``sweep_file`` before and after training; returns the rows of
    ``OUT/dynamics.csv`` (see the module text)."""
    from crossbar_ep.config.experiment import load_config
    from crossbar_ep.runs import train
    from crossbar_ep.runs.sweep import load_sweep
    if samples < 1 or cap_init < 1 or cap_trained < 1 or not tol > 0:
        raise CrossbarEPError("diagnose-sweep: --samples, --cap-init and --cap-trained need "
                              "at least 1 and --tol a positive value")
    sweep = load_sweep(sweep_file)
    os.makedirs(os.path.join(out_dir, "points"), exist_ok=True)
    res_path = os.path.join(out_dir, RESULTS)
    traj_path = os.path.join(out_dir, TRAJECTORIES)
    rows, trajs = read_rows(res_path), read_rows(traj_path)
    done = {(r["point_id"], r["phase"]) for r in rows}
    axes = list(sweep.axes)
    for n, p in enumerate(sweep.points, 1):
        if p.kind != "point":
            continue
        pid = p.point_id
        if (pid, "trained") in done:
            continue
        overrides = list(p.overrides)
        cfg = load_config(sweep.base, overrides)
        run_dir = os.path.join(out_dir, "points", pid)
        params = {a: p.params.get(a, "") for a in axes}
        if os.path.exists(os.path.join(run_dir, train.CHECKPOINT)):
            run = train.resume(run_dir, epochs=cfg.training.epochs, expect=cfg)
        else:
            run = train.start(cfg, run_dir, overwrite=True)
        if (pid, "init") not in done:
            if run.epochs_done:
                raise CrossbarEPError(f"{run_dir}: trained but its initial measures are "
                                      f"missing; delete the folder to measure it again")
            row, traj = measure(run, "init", samples, cap_init, tol, trajectory_units)
            rows.append({"point_id": pid, **params, **row})
            trajs += [{"point_id": pid, **params, **t} for t in traj]
            write_rows(res_path, rows, ("point_id", *axes))
            if traj:
                write_rows(traj_path, trajs, ("point_id", *axes))
            log(f"[{n}/{len(sweep.points)}] {pid} {params} init: SR "
                f"{row['spectral_radius']:.3f}, FTMLE {row['ftmle']:.3f}, steps "
                f"{row['conv_steps']:.1f} ({100 * row['conv_fraction']:.0f}% converged)")
        t0 = time.time()
        note = ""
        try:
            train.fit(run, progress=False)
        except train.DivergenceError as exc:      # a diverging setting is a result too
            note = str(exc).replace("\n", " ")
        train_s = time.time() - t0
        row, traj = measure(run, "trained", samples, cap_trained, tol, trajectory_units)
        row["train_s"] = train_s
        row["note"] = note
        rows.append({"point_id": pid, **params, **row})
        trajs += [{"point_id": pid, **params, **t} for t in traj]
        write_rows(res_path, rows, ("point_id", *axes))
        if traj:
            write_rows(traj_path, trajs, ("point_id", *axes))
        log(f"[{n}/{len(sweep.points)}] {pid} {params} after {row['epochs']} epochs: test "
            f"{100 * row.get('test_acc_best', float('nan')):.2f}%, SR "
            f"{row['spectral_radius']:.3f}, FTMLE {row['ftmle']:.3f}, steps "
            f"{row['conv_steps']:.1f} ({100 * row['conv_fraction']:.0f}% converged)")
    return rows

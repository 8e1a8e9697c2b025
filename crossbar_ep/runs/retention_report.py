"""The files of a retention evaluation (``crossbar-ep evaluate``): ``retention.csv`` (one row
per compensation mode, repeat and time), ``recovery.csv`` (remedies after drift or faults),
``retention.h5`` (per-time conductance statistics of every array), ``retention.md`` (accuracy
mean +- sd per time and mode; the recovery table) and ``retention.png`` (accuracy against log
time, one line per mode, the spread over repeats as a band).  ``plan.json`` records what was
asked; an interrupted evaluation resumes at the first (mode, repeat) not in the CSV.
"""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np

from crossbar_ep.errors import CheckpointError
from crossbar_ep.runs.retention import Evaluator, RetentionPlan, Unit

ROW_KEYS = ("mode", "repeat", "time", "time_s", "test_acc", "test_loss", "failed_devices",
            "w_rel_err_mean", "calibration_reads")
RECOVERY_KEYS = ("mode", "repeat", "time", "time_s", "remedy", "batches", "test_acc",
                 "pulses", "program_J")


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _csv_text(rows: list, keys: tuple) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(keys), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _read_csv(path: str) -> list:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k, v in r.items():
            if k in ("repeat", "failed_devices", "batches", "calibration_reads", "pulses"):
                r[k] = int(float(v))
            elif k not in ("mode", "time", "remedy"):
                r[k] = float(v)
    return rows


def evaluate_run(run_dir: str, plan: RetentionPlan, out_dir: str | None = None,
                 progress: bool = True, overwrite: bool = False) -> dict:
    """Evaluate run ``run_dir`` as ``plan`` says; returns {"rows", "recovery", "table",
    "out_dir"}.  Resumes an interrupted evaluation in ``out_dir`` (default
    ``RUN_DIR/retention``) when its plan is the same."""
    from crossbar_ep.runs import train
    run = train.resume(run_dir, record=False)
    ev = Evaluator(run, plan)            # checks the card and settings before anything is written
    out_dir = out_dir or os.path.join(run_dir, "retention")
    os.makedirs(out_dir, exist_ok=True)
    plan_path = os.path.join(out_dir, "plan.json")
    want = {"run": os.path.abspath(run_dir), **plan.to_dict()}
    rows_path = os.path.join(out_dir, "retention.csv")
    rec_path = os.path.join(out_dir, "recovery.csv")
    if os.path.isfile(plan_path) and not overwrite:
        with open(plan_path, encoding="utf-8") as fh:
            try:
                had = json.load(fh)
            except ValueError:
                had = None
        if had != want:
            raise CheckpointError(f"{out_dir}: holds an evaluation of another plan; choose "
                                  f"another --out, or add --overwrite to start it again")
    else:
        for p in (rows_path, rec_path, os.path.join(out_dir, "retention.h5")):
            if os.path.exists(p):
                os.remove(p)
        _write_atomic(plan_path, json.dumps(want, indent=1))
    rows, recovery = _read_csv(rows_path), _read_csv(rec_path)
    done = {(r["mode"], r["repeat"]) for r in rows}
    units = [(m, r) for m in plan.compensation for r in range(plan.repeats)
             if (m, r) not in done]
    bar = _bar(len(units) * len(plan.times), progress)
    stats = {}
    for mode, repeat in units:
        u: Unit = ev.unit(mode, repeat, bar.update if bar is not None else None)
        rows += u.rows
        recovery += u.recovery
        stats[(mode, repeat)] = u.stats
        _write_atomic(rows_path, _csv_text(rows, ROW_KEYS))
        if recovery:
            _write_atomic(rec_path, _csv_text(recovery, RECOVERY_KEYS))
        _write_h5(os.path.join(out_dir, "retention.h5"), mode, repeat, u.stats)
    if bar is not None:
        bar.close()
    table = summary_table(rows, plan, recovery)
    _write_atomic(os.path.join(out_dir, "retention.md"), table)
    plot(rows, plan, os.path.join(out_dir, "retention.png"), run_dir)
    return {"rows": rows, "recovery": recovery, "table": table, "out_dir": out_dir}


def _bar(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc="evaluate", unit="point")


def _write_h5(path: str, mode: str, repeat: int, stats: dict) -> None:
    """Per (mode, repeat, time, array) conductance statistics, one group each."""
    import h5py
    with h5py.File(path, "a") as f:
        f.attrs["units"] = "conductances in S; w_rel_err dimensionless"
        g = f.require_group(mode).require_group(f"repeat_{repeat}")
        for label, arrays in stats.items():
            tg = g.require_group(label)
            for name, s in arrays.items():
                ag = tg.require_group(name)
                for k, v in s.items():
                    if k in ag:
                        del ag[k]
                    ag.create_dataset(k, data=v)


def summary_table(rows: list, plan: RetentionPlan, recovery: list = ()) -> str:
    """Markdown: test accuracy (%) mean +- sd over repeats per time (rows) and compensation
    mode (columns); then the recovery remedies, when run."""
    modes = [m for m in plan.compensation if any(r["mode"] == m for r in rows)]
    lines = [f"Test accuracy (%), mean +- sd over {plan.repeats} repeat(s)", "",
             "| time after programming | " + " | ".join(f"compensation {m}" for m in modes)
             + " |", "|---|" + "---|" * len(modes)]
    for label, _ in plan.times:
        cells = []
        for m in modes:
            a = np.array([r["test_acc"] for r in rows if r["mode"] == m and r["time"] == label])
            cells.append(f"{100 * a.mean():.2f} +- {100 * a.std():.2f}" if a.size else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if recovery:
        lines += ["", "Recovery (test accuracy %, mean over repeats; pulses and programming "
                  "energy of the in-situ batches)", "",
                  "| mode | time | remedy | batches | accuracy | pulses | energy (J) |",
                  "|---|---|---|---|---|---|---|"]
        keys = []
        for r in recovery:
            k = (r["mode"], r["time"], r["remedy"], r["batches"])
            if k not in keys:
                keys.append(k)
        for k in keys:
            sel = [r for r in recovery if (r["mode"], r["time"], r["remedy"], r["batches"]) == k]
            acc = 100 * np.mean([r["test_acc"] for r in sel])
            pul = np.mean([r["pulses"] for r in sel])
            en = np.mean([r["program_J"] for r in sel])
            lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {acc:.2f} | {pul:.3g} | "
                         f"{en:.3g} |")
    return "\n".join(lines) + "\n"


def plot(rows: list, plan: RetentionPlan, path: str, title: str = "") -> None:
    """Accuracy against time after programming (log axis), one line per compensation mode
    (mean over repeats), the min-max spread over repeats as a band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, m in enumerate(plan.compensation):
        ts, mean, lo, hi = [], [], [], []
        for label, t in plan.times:
            a = np.array([r["test_acc"] for r in rows if r["mode"] == m and r["time"] == label])
            if a.size:
                ts.append(t)
                mean.append(100 * a.mean())
                lo.append(100 * a.min())
                hi.append(100 * a.max())
        if not ts:
            continue
        colour = f"C{i}"
        ax.plot(ts, mean, "o-", color=colour, label=f"compensation: {m}")
        ax.fill_between(ts, lo, hi, color=colour, alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xticks([t for _, t in plan.times])
    ax.set_xticklabels([lab for lab, _ in plan.times])
    ax.set_xlabel("time after programming")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(os.path.basename(os.path.normpath(title)) if title else "retention",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)

"""The files a run directory derives from its checkpoint's history: ``metrics.csv``,
``metrics.json``, ``curves.png`` and ``summary.txt``; written after every epoch, and rebuilt
when a kill between the checkpoint and these writes left them behind (on ``--resume``, and
when ``summary`` or ``plot`` read the folder).  docs/runs.md, "Atomicity and resume"."""

from __future__ import annotations

import csv
import io
import json
import os

from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.runs.rundir import CHECKPOINT, RunDir

METRIC_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "val_acc",
               "epoch_time_s", "samples_per_s", "settle_residual", "settle_steps",
               "settle_time_free_s", "settle_time_nudged_s", "pulses_total", "at_bound_mean",
               "energy_array_J", "energy_dac_J", "energy_adc_J", "energy_program_J",
               "energy_total_J", "ir_drop_rel")
DERIVED = ("metrics.csv", "metrics.json", "curves.png", "summary.txt")


def metrics_csv(history: list) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_KEYS, extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_KEYS})
    return buf.getvalue()


def write_metrics(rd: RunDir, history: list) -> None:
    rd.write_text("metrics.csv", metrics_csv(history))
    rd.write_text("metrics.json", json.dumps(history, indent=1))


def write_curves(rd: RunDir, history: list, title: str) -> None:
    """``curves.png``: loss and accuracy versus epoch."""
    from crossbar_ep.plots.curves import plot_curves
    rd.write("curves.png", lambda fh: plot_curves(history, fh, title))


def summary_of(name: str, algorithm: str, history: list, out_dir: str) -> dict:
    """The summary of a run's history: the line ``summary.txt`` holds and its numbers."""
    h = history
    if not h:
        return {"line": f"{name}: no epoch completed"}
    best = max(h, key=lambda r: r["test_acc"])
    total = sum(r["epoch_time_s"] for r in h)
    line = (f"{name} [{algorithm}]: best test {100 * best['test_acc']:.2f}% "
            f"(epoch {best['epoch']}), final test {100 * h[-1]['test_acc']:.2f}%, final train "
            f"{100 * h[-1]['train_acc']:.2f}%, {len(h)} epochs in {total / 60:.1f} min")
    if h[-1].get("collapse"):
        line += "; WARNING: training collapsed (metrics.json: collapse)"
    return {"line": f"{line}; run dir {out_dir}", "best_test_acc": best["test_acc"],
            "best_epoch": best["epoch"], "final_test_acc": h[-1]["test_acc"], "epochs": len(h),
            "time_s": total}


def write_summary(rd: RunDir, s: dict) -> None:
    rd.write_text("summary.txt", s["line"] + "\n")


def _rows(path: str, fmt: str) -> list | None:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            if fmt == "json":
                rows = json.load(fh)
                return rows if isinstance(rows, list) else None
            return list(csv.DictReader(fh))
    except (OSError, ValueError, csv.Error):
        return None


def _same_epochs(rows: list | None, history: list) -> bool:
    if rows is None or len(rows) != len(history):
        return False
    if not history:
        return True
    try:
        return float(rows[-1].get("epoch")) == float(history[-1]["epoch"])
    except (AttributeError, TypeError, ValueError):
        return False


def stale_files(rd: RunDir, history: list, finished: bool, name: str, algorithm: str) -> list:
    """The derived files that do not match ``history`` (missing, short, or from an older
    epoch); ``finished``: the run has trained all its epochs, so it has a summary."""
    stale = []
    for fname, fmt in (("metrics.csv", "csv"), ("metrics.json", "json")):
        if not _same_epochs(_rows(rd.file(fname), fmt), history):
            stale.append(fname)
    if stale or not os.path.isfile(rd.file("curves.png")):
        stale.append("curves.png")
    if finished and history:
        want = summary_of(name, algorithm, history, "")["line"].rsplit("; run dir", 1)[0]
        try:
            with open(rd.file("summary.txt"), encoding="utf-8") as fh:
                have = fh.read()
        except (OSError, ValueError):
            have = ""
        if not have.startswith(want):
            stale.append("summary.txt")
    return stale


def rebuild(rd: RunDir, history: list, finished: bool, name: str, algorithm: str,
            stale: list | None = None) -> list:
    """Rewrite the stale derived files from ``history``; returns their names."""
    stale = stale_files(rd, history, finished, name, algorithm) if stale is None else stale
    if "metrics.csv" in stale or "metrics.json" in stale:
        write_metrics(rd, history)
    if "curves.png" in stale and history:
        write_curves(rd, history, f"{name} ({algorithm})")
    if "summary.txt" in stale:
        write_summary(rd, summary_of(name, algorithm, history, rd.path))
    return stale


def fresh_history(run_dir: str) -> list | None:
    """For readers (``summary``, ``plot``): bring a run directory's derived files up to date
    with its checkpoint.  Returns None when they are (or could be made) current; otherwise
    the checkpoint's history, for the caller to use instead (a read-only folder, or another
    process holds the run's lock and writes them itself)."""
    rd = RunDir(run_dir)
    if not os.path.isfile(rd.file(CHECKPOINT)):
        return None
    history = rd.history()
    try:
        cfg = rd.config()
    except CrossbarEPError:
        return None
    if history is None:
        return None
    finished = len(history) >= cfg.training.epochs
    args = (cfg.name, cfg.training.algorithm)
    stale = stale_files(rd, history, finished, *args)
    if not stale:
        return None
    try:
        lock = rd.lock()
    except CrossbarEPError:
        return history
    try:
        rebuild(rd, history, finished, *args, stale)
    except (OSError, CrossbarEPError):
        return history
    finally:
        lock.release()
    return None

"""One table from many runs: ``crossbar-ep summary RUN_DIR ...``.

Reads each run's ``metrics.csv`` (and ``config.yaml`` for its name) and reports, per run, the
epochs done, the best test accuracy (%) with its epoch, the final one, the test accuracy at
chosen epochs, the mean epoch time (s) and the training throughput (samples/s), plus the best
accuracy of every auxiliary head.  Output is a Markdown table (for a paper's draft or the
docs) or CSV.  A run still training is read as it stands.  ``group_by="seed"`` merges the runs
that differ only in their seed into one row of means ± sd (:mod:`crossbar_ep.runs.seed_groups`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re

from crossbar_ep.errors import CrossbarEPError

DEFAULT_EPOCHS = (1, 5, 10, 20)


def _metrics_path(path: str) -> str:
    if os.path.isdir(path):
        p = os.path.join(path, "metrics.csv")
        if not os.path.isfile(p):
            raise CrossbarEPError(f"{path}: no metrics.csv (not a run directory, or no epoch "
                                  f"finished yet)")
        return p
    if os.path.isfile(path) and path.endswith((".csv", ".json")):
        return path
    raise CrossbarEPError(f"{path}: no such run directory or metrics file (.csv or .json)")


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _read_json(p: str) -> list[dict]:
    """metrics.json rows (a list of objects); values that are not numbers become NaN."""
    try:
        with open(p, encoding="utf-8") as f:
            rows = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CrossbarEPError(f"{p}: cannot read ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CrossbarEPError(f"{p}: not a metrics file (needs a list of per-epoch objects)")
    return [{str(k): v for k, v in r.items()} for r in rows]


def read_metrics(path: str) -> list[dict]:
    """Rows of a run's metrics (a run directory, its metrics.csv or metrics.json) with float
    values.  For a run directory the CSV's rows also get the per-epoch values only
    metrics.json holds (the heads' accuracies, per-layer signals).  A run directory whose
    files a kill left behind its checkpoint is brought up to date first (or, when it cannot
    be written now, read from the checkpoint's history)."""
    if os.path.isdir(path):
        from crossbar_ep.runs.derived import fresh_history
        history = fresh_history(path)
        if history is not None:
            return [{k: _float(v) for k, v in r.items() if not isinstance(v, dict)}
                    for r in history]
    p = _metrics_path(path)
    if p.endswith(".json"):
        rows = _read_json(p)
    else:
        try:
            with open(p, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CrossbarEPError(f"{p}: cannot read ({exc})") from None
    if not rows or "epoch" not in rows[0] or "test_acc" not in rows[0]:
        raise CrossbarEPError(f"{p}: not a metrics file (needs the columns epoch and test_acc)")
    out = [{k: _float(v) for k, v in r.items()} for r in rows]
    side = os.path.join(path, "metrics.json") if os.path.isdir(path) else None
    if side and os.path.isfile(side):
        extra = {_float(r.get("epoch")): r for r in _read_json(side)}
        for r in out:
            for k, v in extra.get(r["epoch"], {}).items():
                r.setdefault(k, _float(v))
    return out


def _run_name(path: str) -> str:
    """A run directory's name; for a file its stem (the folder's name for metrics.*)."""
    if os.path.isdir(path):
        return os.path.basename(os.path.normpath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem == "metrics":
        return os.path.basename(os.path.dirname(os.path.abspath(path)))
    return stem


def summarise_run(path: str, epochs=DEFAULT_EPOCHS) -> dict:
    """Summary of one run: accuracies in %, epoch time in s, throughput in samples/s."""
    rows = read_metrics(path)
    acc = [r["test_acc"] for r in rows]
    valid = [i for i, a in enumerate(acc) if not math.isnan(a)]
    if not valid:
        raise CrossbarEPError(f"{path}: the metrics hold no test accuracy")
    best = max(valid, key=lambda i: acc[i])           # the first epoch reaching the best
    by_epoch = {int(r["epoch"]): r for r in rows}
    s = {"run": _run_name(path), "epochs": int(rows[-1]["epoch"]),
         "best": 100 * acc[best], "best_epoch": int(rows[best]["epoch"]),
         "final": 100 * acc[valid[-1]],
         "at": {e: 100 * by_epoch[e]["test_acc"] if e in by_epoch else math.nan
                for e in epochs}}
    s["epoch_time_s"] = _mean(rows, "epoch_time_s")
    s["samples_per_s"] = _mean(rows, "samples_per_s")
    heads = sorted(k for k in rows[0] if k.startswith("head_acc_"))
    s["heads"] = {}
    for k in heads:
        vals = [r[k] for r in rows if not math.isnan(r[k])]
        if vals:
            s["heads"][k[len("head_acc_"):]] = 100 * max(vals)
    return s


def _mean(rows: list, key: str) -> float:
    """Mean of a column over the epochs that have it (NaN if none do)."""
    vals = [r[key] for r in rows if not math.isnan(r.get(key, math.nan))]
    return sum(vals) / len(vals) if vals else math.nan


def _natural(name: str) -> tuple:
    """'A12' after 'A3': digits compare as numbers."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _fmt(v: float, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def expand_paths(paths) -> list:
    """Paths with glob patterns (``*``, ``?``, ``[``) expanded in sorted order, so a quoted
    pattern works as the shell's would; a pattern matching nothing is an error."""
    import glob
    out = []
    for p in paths:
        if any(c in p for c in "*?[") and not os.path.exists(p):
            hits = sorted(glob.glob(p))
            if not hits:
                raise CrossbarEPError(f"{p}: no run directory or metrics file matches")
            out += hits
        else:
            out.append(p)
    return out


def summary_table(paths, epochs=DEFAULT_EPOCHS, fmt: str = "md", skipped=None,
                  group_by: str | None = None) -> str:
    """A Markdown ('md') or CSV ('csv') table with one row per run (per group of seeds with
    ``group_by="seed"``).

    With a list as ``skipped``, runs that cannot be summarised (no epoch finished yet, not a
    run directory) are left out and ``(path, message)`` appended to it; otherwise the first
    such run raises.  No run left is always an error.
    """
    if fmt not in ("md", "csv"):
        raise CrossbarEPError(f"summary format {fmt!r}: use md or csv")
    sums = []
    for p in paths:
        try:
            sums.append(summarise_run(p, epochs))
        except CrossbarEPError as exc:
            if skipped is None:
                raise
            skipped.append((p, str(exc)))
    if not sums:
        raise CrossbarEPError("no run to summarise: " + "; ".join(m for _, m in skipped or []))
    if group_by is not None:
        from crossbar_ep.runs.seed_groups import group_runs, group_table
        _check_group_by(group_by)
        bad = {p for p, _ in skipped or []}
        kept = [p for p in paths if p not in bad]
        return group_table(group_runs(kept, _run_name), dict(zip(kept, sums)), epochs, fmt)
    heads = sorted({h for s in sums for h in s["heads"]}, key=_natural)
    cols = (["run", "epochs", "best test %", "best epoch", "final %"]
            + [f"epoch {e} %" for e in epochs] + ["s/epoch", "samples/s"]
            + [f"head {h} best %" for h in heads])
    body = []
    for s in sums:
        body.append([s["run"], str(s["epochs"]), _fmt(s["best"]), str(s["best_epoch"]),
                     _fmt(s["final"])] + [_fmt(s["at"][e]) for e in epochs]
                    + [_fmt(s["epoch_time_s"], 1), _fmt(s["samples_per_s"], 0)]
                    + [_fmt(s["heads"].get(h, math.nan)) for h in heads])
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows(body)
        return buf.getvalue().rstrip("\n")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _check_group_by(group_by: str) -> None:
    if group_by != "seed":
        raise CrossbarEPError(f"--group-by {group_by!r}: the runs can be grouped by seed "
                              f"(--group-by seed)")


def plot_summary(paths, out_png: str, title: str = "", train: bool = False,
                 ymin: float | None = None, group_by: str | None = None) -> str:
    """Test accuracy versus epoch of the given runs in one PNG (best epochs marked); with
    ``group_by="seed"`` each group's mean with its seed range as a band."""
    from crossbar_ep.plots.curves import plot_accuracy_overlay
    if group_by is not None:
        from crossbar_ep.plots.seed_bands import plot_seed_bands
        from crossbar_ep.runs.seed_groups import group_runs, group_series
        _check_group_by(group_by)
        series = group_series(group_runs(paths, _run_name), read_metrics)
        try:
            return plot_seed_bands(series, out_png, title=title, ymin=ymin)
        except OSError as exc:
            raise CrossbarEPError(f"--plot {out_png}: cannot write "
                                  f"({exc.strerror or exc})") from None
    series = {}
    for p in paths:
        rows = read_metrics(p)
        series[_run_name(p)] = [r for r in rows if not math.isnan(r["test_acc"])]
    try:
        return plot_accuracy_overlay(series, out_png, title=title, train=train, ymin=ymin)
    except OSError as exc:
        raise CrossbarEPError(f"--plot {out_png}: cannot write ({exc.strerror or exc})") from None


def parse_epochs(text: str) -> tuple:
    """'1,5,10' -> (1, 5, 10); a clear error otherwise."""
    try:
        eps = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise CrossbarEPError(f"--at {text!r}: give epoch numbers separated by commas, "
                              f"e.g. --at 1,5,10,20") from None
    if not eps or min(eps) < 1:
        raise CrossbarEPError(f"--at {text!r}: epochs count from 1, e.g. --at 1,5,10,20")
    return eps

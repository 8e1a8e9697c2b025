"""Figures of a sweep directory: accuracy versus each swept parameter (mean and standard
deviation over seeds), a heatmap for two-parameter grids, the ideal digital reference as a
horizontal line."""

from __future__ import annotations

import json
import os

import numpy as np


def _value(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _label(v) -> str:
    if isinstance(v, str) and (v.endswith(".yaml") or "/" in v):
        return os.path.splitext(os.path.basename(v))[0]
    return f"{v:g}" if isinstance(v, float) else str(v)


def plot_sweep(sweep_dir: str, out_dir: str | None = None, metric: str = "best_test_acc"
               ) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossbar_ep.runs.sweep import read_results
    rows = read_results(sweep_dir)
    with open(os.path.join(sweep_dir, "points.json"), encoding="utf-8") as fh:
        pts = {p["point_id"]: p for p in json.load(fh)}
    axes = list(dict.fromkeys(k for p in pts.values() for k in p["params"]))
    ok = [r for r in rows if r["status"] == "ok" and r["point_id"] in pts]
    ref = [float(r[metric]) for r in ok if r["kind"] == "reference"]
    data = [(pts[r["point_id"]]["params"], float(r[metric])) for r in ok if r["kind"] == "point"]
    out_dir = out_dir or os.path.join(sweep_dir, "figures")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for ax_key in axes:
        others = [k for k in axes if k != ax_key]
        groups: dict = {}
        for params, acc in data:
            if ax_key not in params:
                continue
            g = tuple((k, json.dumps(params.get(k))) for k in others)
            groups.setdefault(g, {}).setdefault(json.dumps(params[ax_key]), []).append(acc)
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for gi, (g, by_x) in enumerate(sorted(groups.items())):
            xs = [json.loads(x) for x in by_x]
            numeric = all(isinstance(_value(x), float) for x in xs)
            order = np.argsort([_value(x) for x in xs]) if numeric else range(len(xs))
            xv = [xs[i] for i in order]
            ys = [by_x[json.dumps(x)] for x in xv]
            mean = [100 * np.mean(y) for y in ys]
            err = [100 * np.std(y) if len(y) > 1 else 0.0 for y in ys]
            pos = [_value(x) for x in xv] if numeric else list(range(len(xv)))
            label = ", ".join(f"{k.split('.')[-1]}={_label(json.loads(v))}" for k, v in g) or None
            ax.errorbar(pos, mean, yerr=err, marker="o", ms=4, capsize=3, label=label,
                        color=f"C{gi % 10}")
            if not numeric:
                ax.set_xticks(pos)
                ax.set_xticklabels([_label(x) for x in xv], rotation=20, fontsize=8)
        if ref:
            ax.axhline(100 * np.mean(ref), color="k", ls="--", lw=1,
                       label=f"ideal digital ({100 * np.mean(ref):.2f}%)")
        ax.set_xlabel(ax_key)
        ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
        ax.grid(alpha=0.3)
        if len(groups) > 1 or ref:
            ax.legend(fontsize=7)
        ax.set_title(f"{os.path.basename(os.path.abspath(sweep_dir))}: mean +- std over seeds",
                     fontsize=9)
        fig.tight_layout()
        p = os.path.join(out_dir, f"{metric}_vs_{ax_key.replace('.', '_')}.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    if len(axes) == 2:
        a, b = axes
        xa = sorted({json.dumps(p[a]) for p, _ in data if a in p}, key=lambda s: _sortkey(s))
        xb = sorted({json.dumps(p[b]) for p, _ in data if b in p}, key=lambda s: _sortkey(s))
        grid = np.full((len(xb), len(xa)), np.nan)
        for i, vb in enumerate(xb):
            for j, va in enumerate(xa):
                accs = [acc for p, acc in data if json.dumps(p.get(a)) == va
                        and json.dumps(p.get(b)) == vb]
                if accs:
                    grid[i, j] = 100 * np.mean(accs)
        fig, ax = plt.subplots(figsize=(1.2 * len(xa) + 3, 0.8 * len(xb) + 2.5))
        im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
        for i in range(len(xb)):
            for j in range(len(xa)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                            color="w" if grid[i, j] < np.nanmean(grid) else "k")
        ax.set_xticks(range(len(xa)))
        ax.set_xticklabels([_label(json.loads(v)) for v in xa], fontsize=8)
        ax.set_yticks(range(len(xb)))
        ax.set_yticklabels([_label(json.loads(v)) for v in xb], fontsize=8)
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        fig.colorbar(im, ax=ax, label=f"{metric.replace('_', ' ')} (%)")
        title = "mean over seeds"
        if ref:
            title += f"; ideal digital {100 * np.mean(ref):.2f}%"
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        p = os.path.join(out_dir, f"{metric}_heatmap.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written


def _sortkey(s: str):
    v = _value(json.loads(s))
    return (0, v, "") if isinstance(v, float) else (1, 0.0, str(v))

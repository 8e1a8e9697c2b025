"""Figures of the dynamics study (docs/studies/dynamics.md) from ``crossbar-ep diagnose-sweep``
results, with the paper's numbers beside ours (open markers, dashed).

    python -m crossbar_ep.plots.dynamics fig5 docs/results/dynamics/fig5.csv \\
        -o docs/figures/dynamics_fig5.png

Figures: ``fig5`` (spectral radius, FTMLE, convergence steps, EP-BP cosine and accuracy against
beta_i, symmetric and random feedback, before and after training), ``fig6`` (accuracy and the
dynamics against beta_i per depth), ``fig4`` (accuracy over alpha x beta_i), ``figS8``
(against the AGT link probability) and ``fig2`` (settling trajectories, from
``trajectories.csv``).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys

from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.plots import dynamics_paper as paper

PHASES = ("init", "trained")
FEEDBACK = ("symmetric", "random")
COLOURS = {("symmetric", "init"): "C0", ("symmetric", "trained"): "C1",
           ("random", "init"): "C2", ("random", "trained"): "C3"}


def read(path: str) -> list:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CrossbarEPError(f"{path}: cannot read ({exc})") from None
    if not rows:
        raise CrossbarEPError(f"{path}: no rows")
    return rows


def num(r: dict, k: str) -> float:
    try:
        return float(r.get(k, ""))
    except ValueError:
        return math.nan


def cos_mean(r: dict) -> float:
    """Mean EP-BP cosine over the hidden matrices (W0 .. W_{L-1}; the readout excluded)."""
    v = [num(r, k) for k in r if k.startswith("cos_W") and k != "cos_Wf"]
    v = [x for x in v if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


def _value(r: dict, q: str) -> float:
    if q == "cos":
        return cos_mean(r)
    v = num(r, q)
    return 100 * v if q.startswith("test_acc") else v


def _axes(n: int, width: float = 3.3, height: float = 3.0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, n, figsize=(width * n, height))
    return plt, fig, list(axes) if n > 1 else [axes]


def _categorical(ax, values, label):
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels([f"{v:g}" for v in values], rotation=45)
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def _save(plt, fig, out: str, title: str) -> str:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=120)
    except OSError as exc:
        raise CrossbarEPError(f"-o {out}: cannot write ({exc.strerror or exc})") from None
    plt.close(fig)
    return out


def _steps_line(ax, xs, ys, fracs, colour, label):
    """Convergence steps: filled where every sample converged within the cap, a cross where
    only some did (their mean), nothing where none did."""
    ax.plot(xs, [y if f > 0 else math.nan for y, f in zip(ys, fracs)], "-", color=colour,
            label=label)
    for x, y, f in zip(xs, ys, fracs):
        if f > 0:
            ax.plot([x], [y], "o" if f >= 1 else "x", ms=4 if f >= 1 else 6, color=colour)


def fig5(rows: list, out: str) -> str:
    """Accuracy, SR, FTMLE, convergence steps and EP-BP cosine against beta_i."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    betas = sorted({num(r, "beta_i") for r in rows})
    quantities = (("test_acc_best", "best test accuracy (%)", "test_acc"),
                  ("spectral_radius", "spectral radius of M", "spectral_radius"),
                  ("ftmle", "FTMLE (over T steps)", "ftmle"),
                  ("conv_steps", "steps to converge", "conv_steps"),
                  ("cos", "cos(EP update, BP gradient),\nmean over hidden matrices", None))
    fig, grid = plt.subplots(2, 3, figsize=(12, 7.2))
    axes = list(grid.ravel())
    xs = list(range(len(betas)))
    for ax, (q, label, pkey) in zip(axes, quantities):
        for fb in FEEDBACK:
            for ph in PHASES:
                if q == "test_acc_best" and ph == "init":
                    continue
                sel = {num(r, "beta_i"): r for r in rows
                       if r["feedback"] == fb and r["phase"] == ph}
                if not sel:
                    continue
                c = COLOURS[(fb, ph)]
                ys = [_value(sel[b], q) if b in sel else math.nan for b in betas]
                if q == "conv_steps":
                    fr = [num(sel[b], "conv_fraction") if b in sel else 0.0 for b in betas]
                    _steps_line(ax, xs, ys, fr, c, f"{fb}, {ph}")
                else:
                    ax.plot(xs, ys, "o-", ms=4, color=c, label=f"{fb}, {ph}")
                ref = paper.FIG5.get(pkey or "", {}).get((fb, ph))
                if ref:
                    pb = dict(zip(paper.BETAS, ref))
                    ax.plot(xs, [pb.get(b) if pb.get(b) is not None else math.nan
                                 for b in betas], "s--", ms=5, mfc="none", lw=0.8, color=c)
        _categorical(ax, betas, "beta_i")
        ax.set_ylabel(label)
        if q == "conv_steps":
            ax.set_yscale("log")
    leg = axes[-1]
    leg.axis("off")
    for fb in FEEDBACK:
        for ph in PHASES:
            leg.plot([], [], "o-", color=COLOURS[(fb, ph)], label=f"ours: {fb} feedback, {ph}")
    leg.plot([], [], "s--", mfc="none", color="gray", label="the paper (same colour)")
    leg.plot([], [], "x", color="gray", label="steps: some samples never converged")
    leg.legend(loc="center", fontsize=9, frameon=False)
    return _save(plt, fig, out, "3 hidden layers x 64, T/K 30/15 (ours: 10 epochs; the paper: "
                                "50)")


def fig6(rows: list, out: str) -> str:
    """Accuracy, SR, FTMLE and convergence steps against beta_i, one line per depth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    depths = sorted({len(r["hidden"].split("x")) for r in rows})
    betas = sorted({num(r, "beta_i") for r in rows})
    quantities = (("test_acc_best", "best test accuracy (%)", "trained"),
                  ("spectral_radius", "spectral radius of M (init)", "init"),
                  ("ftmle", "FTMLE over T steps (init)", "init"),
                  ("conv_steps", "steps to converge (init)", "init"),
                  ("conv_steps", "steps to converge (trained)", "trained"))
    fig, grid = plt.subplots(2, 3, figsize=(12, 7.2))
    axes = list(grid.ravel())
    xs = list(range(len(betas)))
    for i, L in enumerate(depths):
        c = f"C{i}"
        for ax, (q, label, ph) in zip(axes, quantities):
            sel = {num(r, "beta_i"): r for r in rows
                   if len(r["hidden"].split("x")) == L and r["phase"] == ph}
            ys = [_value(sel[b], q) if b in sel else math.nan for b in betas]
            if q == "conv_steps":
                fr = [num(sel[b], "conv_fraction") if b in sel else 0.0 for b in betas]
                _steps_line(ax, xs, ys, fr, c, f"{L} HL")
            else:
                ax.plot(xs, ys, "o-", ms=4, color=c, label=f"{L} HL")
            if q == "test_acc_best" and L in paper.FIG6:
                pb = dict(zip(paper.BETAS, paper.FIG6[L]))
                ax.plot(xs, [pb.get(b, math.nan) for b in betas], "s--", ms=5, mfc="none",
                        lw=0.8, color=c)
            _categorical(ax, betas, "beta_i")
            ax.set_ylabel(label)
            if q == "conv_steps":
                ax.set_yscale("log")
    leg = axes[-1]
    leg.axis("off")
    for i, L in enumerate(depths):
        leg.plot([], [], "o-", color=f"C{i}", label=f"ours: {L} hidden layers")
    leg.plot([], [], "s--", mfc="none", color="gray", label="the paper, 50 epochs (same colour)")
    leg.plot([], [], "x", color="gray", label="steps: some samples never converged")
    leg.legend(loc="center", fontsize=9, frameon=False)
    return _save(plt, fig, out, "Depth x beta_i, 64 units, T = 10 L, K = 5 L, symmetric feedback "
                                "(ours: 5 epochs)")


def fig4(rows: list, out: str) -> str:
    """Best test accuracy over beta_i x alpha (ours, the paper's) and the spectral radius."""
    import numpy as np
    tr = [r for r in rows if r["phase"] == "trained"]
    init = [r for r in rows if r["phase"] == "init"]
    betas = sorted({num(r, "beta_i") for r in tr})
    alphas = sorted({num(r, "alpha") for r in tr})

    def grid(rs, q):
        g = np.full((len(betas), len(alphas)), np.nan)
        for r in rs:
            g[betas.index(num(r, "beta_i")), alphas.index(num(r, "alpha"))] = _value(r, q)
        return g

    pmap = {(b, a): paper.FIG4[i][j] for i, b in enumerate(paper.FIG4_BETAS)
            for j, a in enumerate(paper.FIG4_ALPHAS)}
    ref = np.array([[pmap.get((b, a), np.nan) for a in alphas] for b in betas])
    panels = ((grid(tr, "test_acc_best"), "ours: best test %", "viridis", (10, 100)),
              (ref, "paper: best test % (50 epochs)", "viridis", (10, 100)),
              (grid(init, "spectral_radius"), "ours: spectral radius (init)", "magma", None),
              (grid(init, "conv_steps"), "ours: steps to converge (init)", "magma", None))
    plt, fig, axes = _axes(len(panels), 3.4, 3.2)
    for ax, (g, title, cmap, lim) in zip(axes, panels):
        im = ax.imshow(g, cmap=cmap, vmin=lim[0] if lim else None,
                       vmax=lim[1] if lim else None, origin="lower", aspect="auto")
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                if not np.isnan(g[i, j]):       # light text on the dark half of the map
                    ax.text(j, i, f"{g[i, j]:.3g}", ha="center", va="center", fontsize=7,
                            color="w" if im.norm(g[i, j]) < 0.5 else "k")
        ax.set_xticks(range(len(alphas)))
        ax.set_xticklabels([f"{a:g}" for a in alphas])
        ax.set_yticks(range(len(betas)))
        ax.set_yticklabels([f"{b:g}" for b in betas])
        ax.set_xlabel("alpha")
        ax.set_ylabel("beta_i")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(plt, fig, out, "5 hidden layers x 64, alpha x beta_i")


def figS8(rows: list, out: str) -> str:
    """Accuracy and the dynamics against the AGT link probability P."""
    ps = sorted({num(r, "residual_p") for r in rows})
    quantities = (("test_acc_best", "best test accuracy (%)", "trained"),
                  ("spectral_radius", "spectral radius", None),
                  ("ftmle", "FTMLE", None), ("conv_steps", "steps to converge", None),
                  ("cos", "cos(EP, BP), hidden matrices", None))
    plt, fig, axes = _axes(len(quantities))
    for ax, (q, label, only) in zip(axes, quantities):
        for ph, c in (("init", "C2"), ("trained", "C3")):
            if only and ph != only:
                continue
            sel = {num(r, "residual_p"): r for r in rows if r["phase"] == ph}
            ys = [_value(sel[p], q) if p in sel else math.nan for p in ps]
            ax.plot(range(len(ps)), ys, "o-", ms=4, color=c, label=ph)
        if q == "test_acc_best":
            ax.plot(range(len(ps)), [paper.FIGS8.get(p, math.nan) for p in ps], "s--", ms=5,
                    mfc="none", lw=0.8, color="C3", label="paper (50 epochs)")
        _categorical(ax, ps, "AGT link probability P")
        ax.set_ylabel(label)
        if q == "conv_steps":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    return _save(plt, fig, out, "10 hidden layers x 64, random feedback, AGT graphs: ours "
                                "(filled) and the paper (open, dashed)")


def fig2(rows: list, out: str) -> str:
    """Settling trajectories: units of the first sample against step, per beta_i and
    feedback (columns), before and after training (rows); the last row ||s_t - s_{t-1}||."""
    key = sorted({(r["feedback"] if "feedback" in r else r["model.feedback"],
                   num(r, "model.beta_i")) for r in rows},
                 key=lambda k: (k[0] != "symmetric", k[1]))
    units = [k for k in rows[0] if k.startswith("u") and k[1:].isdigit()]
    plt, fig, _ = _axes(1)
    plt.close(fig)
    fig, axes = plt.subplots(3, len(key), figsize=(2.6 * len(key), 6.6), squeeze=False)
    for j, (fb, b) in enumerate(key):
        for i, ph in enumerate(PHASES):
            rs = [r for r in rows if (r.get("feedback") or r.get("model.feedback")) == fb
                  and num(r, "model.beta_i") == b and r["phase"] == ph]
            steps = [num(r, "step") for r in rs]
            ax = axes[i][j]
            for u in units:
                ax.plot(steps, [num(r, u) for r in rs], lw=0.8)
            ax.set_xscale("log")
            ax.set_title(f"{fb}, beta_i {b:g}, {ph}", fontsize=8)
            ax.grid(alpha=0.3)
            axes[2][j].semilogy(steps, [max(num(r, "dnorm"), 1e-17) for r in rs],
                                lw=1, label=ph)
        axes[2][j].set_xscale("log")
        axes[2][j].axhline(1e-6, color="gray", lw=0.7, ls="--")
        axes[2][j].set_xlabel("step")
        axes[2][j].grid(alpha=0.3)
    axes[0][0].set_ylabel("unit states (init)")
    axes[1][0].set_ylabel("unit states (trained)")
    axes[2][0].set_ylabel("||s_t - s_{t-1}||")
    axes[2][0].legend(fontsize=7)
    return _save(plt, fig, out, "2 hidden layers x 64: settling of one sample (units of both "
                                "layers); dashed: the 1e-6 convergence threshold")


FIGURES = {"fig5": fig5, "fig6": fig6, "fig4": fig4, "figS8": figS8, "fig2": fig2}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m crossbar_ep.plots.dynamics",
                                 description="Draw a dynamics-study figure from "
                                 "diagnose-sweep results, beside the paper's numbers.")
    ap.add_argument("figure", choices=sorted(FIGURES))
    ap.add_argument("results", help="dynamics.csv (trajectories.csv for fig2)")
    ap.add_argument("-o", "--out", required=True, help="PNG to write")
    args = ap.parse_args(argv)
    try:
        print(FIGURES[args.figure](read(args.results), args.out))
    except CrossbarEPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures of a run directory (``crossbar-ep plot RUN_DIR``): curves, settling trajectories,
conductance histograms, pulse heatmaps and the device's pulse response, as PNG files."""

from __future__ import annotations

import json
import os

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_trajectories(tr, epoch: int, batch: int, path: str, n_neurons: int = 4,
                      sample: int = 0) -> str:
    """States of a few neurons per layer versus settle step: free phase, then nudged."""
    plt = _plt()
    free, nudged = tr.trajectories(epoch, batch, "free"), tr.trajectories(epoch, batch, "nudged")
    layers = sorted(free)
    fig, axes = plt.subplots(len(layers), 1, figsize=(7, 2.2 * len(layers)), sharex=True,
                             squeeze=False)
    for ax, k in zip(axes[:, 0], layers):
        f = free[k][:, sample, :n_neurons]
        t_f = np.arange(f.shape[0])
        for j in range(f.shape[1]):
            line, = ax.plot(t_f, f[:, j], lw=1.2)
            if k in nudged:
                nd = nudged[k][:, sample, j]
                ax.plot(t_f[-1] + np.arange(nd.shape[0]), nd, lw=1.2, ls="--",
                        color=line.get_color())
        ax.axvline(t_f[-1], color="gray", lw=0.8, ls=":")
        ax.set_ylabel(f"s{k}")
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(f"settling of sample {sample}, epoch {epoch} batch {batch}: free "
                         f"(solid) then nudged (dashed)", fontsize=9)
    axes[-1, 0].set_xlabel("settle step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_conductance_histograms(tr, path: str) -> str:
    """Per array, histograms of G+ and G- at each recorded epoch (colour = epoch)."""
    plt = _plt()
    epochs = [e for e in tr.epochs if tr.matrices(e)]
    names = tr.matrices(epochs[-1])
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, name in zip(axes[0], names):
        for i, e in enumerate(epochs):
            g = tr.conductance(e, name)
            colour = cmap(i / max(1, len(epochs) - 1))
            for side, ls in (("G_pos", "-"), ("G_neg", "--")):
                if side in g:
                    ax.hist(g[side].ravel() * 1e6, bins=60, histtype="step", color=colour,
                            ls=ls, label=f"epoch {e}" if side == "G_pos" else None)
        ax.set_title(f"{name}: G+ (solid), G- (dashed)", fontsize=9)
        ax.set_xlabel("conductance (uS)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("devices")
    if len(epochs) <= 8:
        axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pulse_heatmaps(tr, epoch: int, path: str) -> str:
    """Pulses per device over one epoch, one heatmap per array."""
    plt = _plt()
    tot = tr.pulse_totals(epoch)
    names = sorted(tot)
    fig, axes = plt.subplots(1, len(names), figsize=(3.8 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        im = ax.imshow(tot[name], aspect="auto", interpolation="nearest", cmap="magma")
        ax.set_title(f"{name}: {int(tot[name].sum()):,} pulses", fontsize=9)
        ax.set_xlabel("input (row)")
        ax.set_ylabel("output (column)")
        fig.colorbar(im, ax=ax, label="pulses per device")
    fig.suptitle(f"pulses per device, epoch {epoch}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _history(run_dir: str) -> list:
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
        return json.load(fh)


def plot_run_dir(run_dir: str, out_dir: str | None = None) -> list:
    """Every figure the run directory supports; returns the PNG paths written.

    A compare directory (``digital/`` and ``crossbar*/`` inside) gives the side-by-side
    accuracy figure and each run's own figures in its subfolder."""
    from crossbar_ep.errors import CrossbarEPError
    from crossbar_ep.plots.curves import plot_comparison, plot_curves

    out_dir = out_dir or os.path.join(run_dir, "figures")
    written = []
    subruns = sorted(d for d in os.listdir(run_dir)
                     if os.path.isfile(os.path.join(run_dir, d, "metrics.json")))
    if not os.path.isfile(os.path.join(run_dir, "metrics.json")):
        if not subruns:
            raise CrossbarEPError(f"{run_dir}: neither a run directory (metrics.json) nor a "
                                  f"compare directory (subfolders with runs)")
        os.makedirs(out_dir, exist_ok=True)
        order = sorted(subruns, key=lambda d: (d != "digital", d))
        p = os.path.join(out_dir, "accuracy_compare.png")
        plot_comparison({d: _history(os.path.join(run_dir, d)) for d in order}, p,
                        os.path.basename(os.path.abspath(run_dir)))
        written.append(p)
        for d in order:
            written += plot_run_dir(os.path.join(run_dir, d), os.path.join(out_dir, d))
        return written
    os.makedirs(out_dir, exist_ok=True)
    p = os.path.join(out_dir, "curves.png")
    plot_curves(_history(run_dir), p, os.path.basename(os.path.abspath(run_dir)))
    written.append(p)
    from crossbar_ep.plots.layer_signals import has_layer_signals, plot_layer_signals
    if has_layer_signals(_history(run_dir)):
        p = os.path.join(out_dir, "layer_signals.png")
        written.append(plot_layer_signals(_history(run_dir), p,
                                          os.path.basename(os.path.abspath(run_dir))))
    from crossbar_ep.config.experiment import config_from_dict, read_yaml
    cfg = config_from_dict(read_yaml(os.path.join(run_dir, "config.yaml")),
                           os.path.join(run_dir, "config.yaml"))
    if cfg.crossbar.enabled and cfg.crossbar.device:
        from crossbar_ep.devices.card import load_card
        from crossbar_ep.plots.curves import plot_pulse_response
        card = load_card(cfg.crossbar.device, cfg.crossbar.device_params)
        if card.pulsed:
            p = os.path.join(out_dir, "device_pulse_response.png")
            written.append(plot_pulse_response(card, p))
    trace_path = os.path.join(run_dir, cfg.traces.file)
    if not os.path.exists(trace_path):
        return written
    from crossbar_ep.io.traces import open_run
    with open_run(trace_path) as tr:
        detailed = [e for e in tr.epochs if tr.batches(e)]
        if detailed:
            e = detailed[-1]
            b = tr.batches(e)[0]
            if tr.trajectories(e, b, "free"):
                p = os.path.join(out_dir, "trajectories.png")
                written.append(plot_trajectories(tr, e, b, p))
        if any(tr.matrices(e) for e in tr.epochs):
            p = os.path.join(out_dir, "conductance_histograms.png")
            written.append(plot_conductance_histograms(tr, p))
        pulsed = [e for e in tr.epochs if tr.pulse_totals(e)]
        if pulsed:
            p = os.path.join(out_dir, "pulse_heatmaps.png")
            written.append(plot_pulse_heatmaps(tr, pulsed[-1], p))
    return written

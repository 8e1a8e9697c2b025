"""Per-layer learning signals over training (``layer_signals.png``): mean |s_nudged - s_free|
of every hidden layer and mean |dW| of every trained projection, per epoch (log scale)."""

from __future__ import annotations


def has_layer_signals(history: list) -> bool:
    return any(k.startswith("ds_L") for r in history for k in r)


def plot_layer_signals(history: list, path, title: str = ""):
    """Two panels from a run's metrics rows (keys ``ds_L<k>``, ``dw_<name>``); PNG into
    ``path``; returns ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    ds = sorted({k for r in history for k in r if k.startswith("ds_L")},
                key=lambda k: int(k[4:]))
    dw = sorted({k for r in history for k in r if k.startswith("dw_")},
                key=lambda k: (k[3] != "W", k == "dw_Wf", len(k), k))  # W0..W19, Wf, heads
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("viridis")
    for i, k in enumerate(ds):
        ax1.plot(ep, [r.get(k) for r in history], "o-", ms=3, color=cmap(i / max(1, len(ds))),
                 label=f"layer {k[4:]}")
    for i, k in enumerate(dw):
        ax2.plot(ep, [r.get(k) for r in history], "o-", ms=3,
                 color=cmap(i / max(1, len(dw))), label=k[3:])
    ax1.set_ylabel("mean |s_nudged - s_free|")
    ax2.set_ylabel("mean |dW| (update direction)")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_nudge_sources(report, path, title: str = ""):
    """Each layer's EP signal split by nudge source (a ``SourceReport``): one line per
    source (the output and each head alone) and the total, mean |s_nudged - s_free| against
    the hidden layer (log scale); a head's layer is marked.  PNG into ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ks = report.layers
    ax.plot(ks, report.signal["all"], "k-", lw=2.2, label="all sources")
    cmap = plt.get_cmap("viridis")
    parts = [n for n in report.signal if n != "all"]
    for i, n in enumerate(parts):
        color = "tab:red" if n == "Wf" else cmap(i / max(1, len(parts)))
        ax.plot(ks, report.signal[n], "o-", ms=3, lw=1.2, color=color,
                label="output (Wf)" if n == "Wf" else f"head {n}")
        if n != "Wf" and n[1:].isdigit() and int(n[1:]) in ks:
            ax.axvline(int(n[1:]), color=color, lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("mean |s_nudged - s_free|")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    from crossbar_ep.plots.curves import save_figure
    return save_figure(fig, ax, path, title, dpi=120)

"""Matplotlib figures (Agg backend, PNG files)."""

from __future__ import annotations


def plot_curves(history: list, path, title: str = ""):
    """Loss and accuracy versus epoch for one run's metrics rows, as PNG into ``path``
    (a file name or a binary file object); returns ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ep = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ep, [r["train_loss"] for r in history], "o-", ms=3, label="train")
    ax1.plot(ep, [r["test_loss"] for r in history], "s-", ms=3, label="test")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.plot(ep, [100 * r["train_acc"] for r in history], "o-", ms=3, label="train")
    ax2.plot(ep, [100 * r["test_acc"] for r in history], "s-", ms=3, label="test")
    if any(r.get("val_acc") is not None for r in history):
        ax2.plot(ep, [None if r.get("val_acc") is None else 100 * r["val_acc"]
                      for r in history], "^-", ms=3, label="validation")
    best = max(history, key=lambda r: r["test_acc"])
    ax2.axhline(100 * best["test_acc"], color="gray", lw=0.8, ls="--")
    ax2.annotate(f"best test {100 * best['test_acc']:.2f}% (epoch {best['epoch']})",
                 (ep[0], 100 * best["test_acc"]), textcoords="offset points", xytext=(0, 4),
                 fontsize=8, color="gray")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend(loc="lower right")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_pulse_response(card, path, n_devices: int = 5, n_pulses: int | None = None,
                        seed: int = 0):
    """Conductance versus pulse number for a train of SET then RESET pulses, for several
    devices drawn with the card's device-to-device variation.  Returns ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from crossbar_ep.devices import DeviceArray

    if not card.pulsed:
        raise ValueError(f"the {card.model} device takes exact updates; it has no pulse "
                         f"response")
    n = n_pulses or int(min(max(1.2 * card.n_states, 20), 20000))
    rng = np.random.default_rng(seed)
    arr = DeviceArray(card, (1, n_devices), rng)
    arr.program(arr.wmin.copy())
    traces = [arr.conductance()[0].copy()]
    for sign in (+1, -1):
        for _ in range(n):
            arr.pulse(np.full((1, n_devices), sign))
            traces.append(arr.conductance()[0].copy())
    g = np.array(traces) * 1e6
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(g.shape[0])
    for d in range(n_devices):
        ax.plot(x, g[:, d], lw=1, label=f"device {d + 1}")
    ax.axvline(n, color="gray", lw=0.8, ls="--")
    ax.text(n * 0.5, ax.get_ylim()[1], "SET", ha="center", va="top", fontsize=9)
    ax.text(n * 1.5, ax.get_ylim()[1], "RESET", ha="center", va="top", fontsize=9)
    ax.set_xlabel("pulse number")
    ax.set_ylabel("conductance (uS)")
    ax.set_title(f"{card.name} ({card.model}, {card.n_states:.0f} states)\n{card.source}",
                 fontsize=9, parse_math=False)          # card text is shown, never parsed
    ax.grid(alpha=0.3)
    if n_devices <= 8:
        ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_comparison(histories: dict, path, title: str = ""):
    """Test (solid) and train (dashed) accuracy versus epoch for several runs, PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (label, h) in enumerate(histories.items()):
        color = f"C{i}"
        ep = [r["epoch"] for r in h]
        best = max(r["test_acc"] for r in h)
        ax.plot(ep, [100 * r["test_acc"] for r in h], "o-", ms=3, color=color,
                label=f"{label} test (best {100 * best:.2f}%)")
        ax.plot(ep, [100 * r["train_acc"] for r in h], "--", color=color, alpha=0.6,
                label=f"{label} train")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_accuracy_overlay(series: dict, path, title: str = "", train: bool = False,
                          ymin: float | None = None):
    """Test accuracy (%) versus epoch of several runs on one axis, each run's best epoch
    marked; ``series`` maps a run's name to its metrics rows.  ``train`` adds the training
    accuracy as dashed lines.  The axis starts at ``ymin`` (%); by default 1 point under the
    lowest test accuracy from each run's third epoch on, so that the late epochs, where runs
    differ by tenths, stay readable (earlier points below it are cut).  PNG into ``path``;
    returns ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, rows in series.items():
        ep = [r["epoch"] for r in rows]
        acc = [100 * r["test_acc"] for r in rows]
        (line,) = ax.plot(ep, acc, "-", lw=1.4, label=name)
        b = max(range(len(acc)), key=lambda i: (acc[i], -i))
        ax.plot([ep[b]], [acc[b]], "o", ms=5, color=line.get_color())
        ax.annotate(f"{acc[b]:.2f}", (ep[b], acc[b]), textcoords="offset points",
                    xytext=(0, 5), ha="center", fontsize=7, color=line.get_color())
        if train and "train_acc" in rows[0]:
            ax.plot(ep, [100 * r["train_acc"] for r in rows], "--", lw=0.9,
                    color=line.get_color())
    if ymin is None:
        late = [100 * r["test_acc"] for rows in series.values() for r in rows[2:]]
        ymin = (int(min(late)) - 1) if late else None
    if ymin is not None:
        ax.set_ylim(bottom=ymin, top=min(100.5, ax.get_ylim()[1]))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)" + (" (dashed: training)" if train else ""))
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, ax, path, title, dpi=130)


def save_figure(fig, ax, path, title: str = "", dpi: int = 120):
    """Title ``ax`` (shown as plain text, never parsed as math), lay out, write ``fig`` as PNG
    into ``path`` (a file name or binary file object), close it; returns ``path``."""
    import matplotlib.pyplot as plt
    if title:
        ax.set_title(title, fontsize=10, parse_math=False)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return path

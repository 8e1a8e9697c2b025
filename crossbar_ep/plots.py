"""Matplotlib figures (Agg backend, PNG files)."""

from __future__ import annotations


def plot_curves(history: list, path, title: str = ""):
    """Loss and accuracy versus epoch for one run's metrics rows, as PNG into ``path``
    (a file name or a binary file object); returns ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path

"""Test accuracy of groups of seeds: each group's mean against epoch, its seed spread as a
band (the lowest to the highest run at each epoch), one distinct colour per group."""

from __future__ import annotations


def group_colours(n: int) -> list:
    """n distinct colours: the 10 of tab10, then tab20's lighter partners, then evenly
    spaced hues."""
    import matplotlib
    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        t20 = matplotlib.colormaps["tab20"]
        return [t20(2 * i) for i in range(10)] + [t20(2 * i + 1) for i in range(n - 10)]
    hsv = matplotlib.colormaps["hsv"]
    return [hsv(i / n) for i in range(n)]


def plot_seed_bands(series: dict, path, title: str = "", ymin: float | None = None):
    """``series``: label -> (epochs, mean %, min %, max %, runs per epoch), as
    :func:`crossbar_ep.runs.seed_groups.group_series` gives.  Each group is drawn as its mean
    (line) with the min-max band of its runs; the legend names the group, its number of runs
    and its best mean accuracy, so no text is placed on the axes.  The axis starts at ``ymin``
    (%), by default 1 point under the lowest mean from the third epoch on.  PNG into ``path``;
    returns ``path``."""
    import math

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from crossbar_ep.plots.curves import save_figure

    n = len(series)
    ncol = 1 if n <= 4 else 2
    fig, ax = plt.subplots(figsize=(8.0, 4.2 + 0.22 * math.ceil(n / ncol)))
    for colour, (label, (ep, mean, lo, hi, cnt)) in zip(group_colours(n), series.items()):
        if not ep:
            continue
        b = max(range(len(mean)), key=lambda i: (mean[i], -i))
        runs = max(cnt)
        ax.plot(ep, mean, "-", lw=1.5, color=colour,
                label=f"{label} ({runs} run{'s' if runs > 1 else ''}): best mean "
                      f"{mean[b]:.2f} (epoch {ep[b]})")
        if runs > 1:
            ax.fill_between(ep, lo, hi, color=colour, alpha=0.22, lw=0)
        ax.plot([ep[b]], [mean[b]], "o", ms=4, color=colour)
    if ymin is None:
        late = [m for (_, mean, *_r) in series.values() for m in mean[2:]]
        ymin = (int(min(late)) - 1) if late else None
    if ymin is not None:
        ax.set_ylim(bottom=ymin, top=min(100.5, ax.get_ylim()[1]))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%): mean, band = seed range")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=ncol,
              frameon=False)
    return save_figure(fig, ax, path, title, dpi=130)

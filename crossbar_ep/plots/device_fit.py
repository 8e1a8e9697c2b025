"""The figure of a device fit (``crossbar-ep device fit``, ``cx.plot_card_fit``).

Left: conductance against pulse number for the measured cycles (median over devices and
cycles, blue band 10th to 90th percentile) and for devices drawn from the fitted card (dashed
median, red band) driven through the same pulses from the measured median start.  Right:
the conductance change of each measured pulse against the conductance before it (SET up,
RESET down) with the fitted card's nominal step (lines).
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.errors import CrossbarEPError


def _protocol(data) -> tuple:
    """The most common (pulses, signs) sequence and the reads of every cycle that has it,
    shape (cycles, reads)."""
    groups: dict = {}
    for _d, _c, pulses, signs, g in data.sequences:
        key = (tuple(pulses), tuple(signs))
        groups.setdefault(key, []).append(g)
    key = max(groups, key=lambda k: len(groups[k]))
    return np.array(key[0]), np.array(key[1]), np.array(groups[key])


def simulate_protocol(card, pulses, signs, g_start: float, n: int = 200,
                      seed: int = 0) -> np.ndarray:
    """Conductance (S) of ``n`` devices drawn from ``card`` at every read of a measured
    sequence (pulse indices, signs), from the conductance ``g_start``; shape (n, reads)."""
    from crossbar_ep.devices import DeviceArray

    arr = DeviceArray(card, (1, n), np.random.default_rng(seed))
    w0 = card.w_min + (g_start - card.g_min_S) / (card.g_max_S - card.g_min_S) * \
        (card.w_max - card.w_min)
    arr.program(np.full(n, w0))
    out = [arr.conductance(drifted=False)[0].copy()]
    for k in range(1, len(pulses)):
        gap = int(pulses[k] - pulses[k - 1])
        arr.pulse(np.full((1, n), int(signs[k]) * gap))
        out.append(arr.conductance(drifted=False)[0].copy())
    return np.array(out).T


def _nominal_steps(card, g: np.ndarray, sign: int) -> np.ndarray:
    from crossbar_ep.devices import pulse_reference
    span = card.g_max_S - card.g_min_S
    w = card.w_min + (g - card.g_min_S) / span * (card.w_max - card.w_min)
    dw = np.array([pulse_reference(card, float(x), sign)[0] - x for x in w])
    return dw / (card.w_max - card.w_min) * span


def plot_card_fit(result, path, n_devices: int = 200, seed: int = 0):
    """Write the figure of a :class:`~crossbar_ep.devices.fit_card.FitResult` as PNG into
    ``path``; returns ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossbar_ep.plots.curves import save_figure

    card = result.card()
    pulses, signs, meas = _protocol(result.data)
    sim = simulate_protocol(card, pulses, signs, float(np.median(meas[:, 0])), n_devices,
                            seed)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    x = pulses - pulses[0]
    for arr, color, label, style in ((meas, "C0", f"measured ({meas.shape[0]} cycles)", "-"),
                                     (sim, "C3", f"fitted card ({n_devices} devices drawn)",
                                      "--")):
        lo, med, hi = np.percentile(arr * 1e6, [10, 50, 90], axis=0)
        ax.plot(x, med, style, color=color, lw=1.3, label=label + ", median")
        ax.fill_between(x, lo, hi, color=color, alpha=0.18 if style == "-" else 0.12, lw=0,
                        label="10th to 90th percentile")
    ax.set_xlabel("pulse number")
    ax.set_ylabel("conductance (uS)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    before, after, sgn = [], [], []
    for t in result.data.trains:
        g = np.r_[t.g0, t.g]
        one = np.diff(np.r_[0, t.offsets]) == 1
        before.append(g[:-1][one])
        after.append(g[1:][one])
        sgn.append(np.full(int(one.sum()), t.sign))
    before, after, sgn = (np.concatenate(v) for v in (before, after, sgn))
    rng = np.random.default_rng(seed)
    keep = rng.permutation(before.size)[:20000]
    for s, color, name in ((1, "C0", "SET"), (-1, "C1", "RESET")):
        m = keep[sgn[keep] == s]
        ax2.plot(before[m] * 1e6, (after[m] - before[m]) * 1e6, ".", ms=1.5, color=color,
                 alpha=0.25, label=f"measured {name}")
        grid = np.linspace(card.g_min_S, card.g_max_S, 120)
        ax2.plot(grid * 1e6, _nominal_steps(card, grid, s) * 1e6, "-", color="k" if s > 0
                 else "0.4", lw=1.4, label=f"fitted nominal {name} step")
    ax2.axhline(0, color="0.6", lw=0.6)
    ax2.set_xlabel("conductance before the pulse (uS)")
    ax2.set_ylabel("conductance change of one pulse (uS)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="best", markerscale=6)
    span = result.g_max_S - result.g_min_S
    title = (f"{card.name}: model {result.model}, {len(result.data.devices)} devices, residual "
             f"rms {result.rms_S * 1e6:.3g} uS ({100 * result.rms_S / span:.2g} % of the range)")
    try:
        return save_figure(fig, ax, path, title)
    except OSError as exc:
        plt.close(fig)
        raise CrossbarEPError(f"{path}: cannot write the figure ({exc.strerror or exc})") \
            from None

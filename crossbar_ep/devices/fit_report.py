"""The device fit's parameter table (Markdown): every card value with its 95 % interval, unit
and what it was estimated from; the residual; the model ranking of ``--model auto``; each
device's own fitted values."""

from __future__ import annotations

import math


def _fmt(v) -> str:
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return f"{v:.4g}" if math.isfinite(v) else "-"


def _interval(ci: dict, k: str, v) -> str:
    if isinstance(v, (tuple, list)):
        parts = [ci.get(f"{k}[{i}]") for i in range(len(v))]
        if not all(p and math.isfinite(p[0]) for p in parts):
            return "-"
        return "; ".join(f"{a:.3g} to {b:.3g}" for a, b in parts)
    lo, hi = ci.get(k, (math.nan, math.nan))
    return f"{lo:.4g} to {hi:.4g}" if math.isfinite(lo) and math.isfinite(hi) else "-"


def report(r) -> str:
    """The Markdown report of a :class:`~crossbar_ep.devices.fit_card.FitResult`."""
    from crossbar_ep.devices.registry import model_class

    spec = model_class(r.model).params
    span = r.g_max_S - r.g_min_S
    files = ", ".join(f"`{p}` (SHA-256 {h[:12]}...)" for p, h in r.data.files)
    out = [f"# Device fit: model `{r.model}`", "",
           f"Data: {files}; {len(r.data.devices)} devices, {r.data.cycles()} cycles, "
           f"{r.data.n_reads} reads.  Residual rms {r.rms_S:.4g} S "
           f"({100 * r.rms_S / span:.3g} % of the range), AIC {r.aic:.6g}, BIC {r.bic:.6g} "
           f"({r.k} fitted numbers); {r.seconds:.1f} s.", ""]
    if r.conventions:
        out += ["Conventions: " + ", ".join(f"`{k}: {v}`" for k, v in r.conventions.items()),
                ""]
    out += ["| parameter | value | 95 % interval | unit | estimated from |",
            "|---|---|---|---|---|",
            f"| `g_min_S` | {r.g_min_S:.4g} | {_interval(r.ci, 'g_min_S', r.g_min_S)} | S | "
            f"{r.how.get('g_min_S', '')} |",
            f"| `g_max_S` | {r.g_max_S:.4g} | {_interval(r.ci, 'g_max_S', r.g_max_S)} | S | "
            f"{r.how.get('g_max_S', '')} |"]
    for k, v in r.params.items():
        out.append(f"| `{k}` | {_fmt(v)} | {_interval(r.ci, k, v)} | {spec[k].unit} | "
                   f"{r.how.get(k, '')} |")
    if r.notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in r.notes]
    if r.ranking:
        out += ["", f"Models ranked by {r.criterion.upper()} (lower is better):", "",
                "| model | fitted numbers | residual rms (S) | AIC | BIC |", "|---|---|---|---|---|"]
        for row in r.ranking:
            if "failed" in row:
                out.append(f"| {row['model']} | failed: {row['failed']} | | | |")
            else:
                out.append(f"| {row['model']} | {row['k']} | {row['rms_S']:.4g} | "
                           f"{row['aic']:.6g} | {row['bic']:.6g} |")
    keys = [k for k in r.per_device[0] if k != "device"] if r.per_device else []
    out += ["", "Each device's own fit (state units w; rms of its residuals):", "",
            "| device | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for row in r.per_device:
        out.append(f"| {row['device']} | " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    return "\n".join(out) + "\n"

"""Runs that differ only in their seed, as one group: ``crossbar-ep summary --group-by seed``.

Two runs belong to one group when their resolved configs are equal once ``training.seed`` and
the keys that cannot change a number are dropped (:data:`IGNORED`: the description, where the
data is looked up, the trace recording).  A run's config is its run directory's
``config.yaml``; a bare metrics file ``NAME.csv`` / ``NAME.json`` (as committed under
``docs/results/``) takes ``NAME.config.yaml`` beside it.  A key that a config lacks (written
before the key existed) reads as the key's default, so that a run made by an older version
groups with a newer one of the same settings.  A metrics file without a config is
grouped by its name instead: ``NAME_s<N>`` (seed N) joins ``NAME`` (read as seed 0, the
default), the convention of the committed files.

A group reports, over its runs, the mean and the sample standard deviation (n - 1 in the
denominator) of the best-epoch test accuracy (each run's best epoch, as the papers report
it), of the final one and of the accuracy at chosen epochs; accuracies in %, epoch times in s.
Groups are labelled by their config's ``name`` plus, where several groups share a name, the
keys in which they differ, so no two labels are the same.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field

from crossbar_ep.errors import CrossbarEPError

IGNORED = ("training.seed", "description", "data.dir", "data.download", "traces.")
_SEED_SUFFIX = re.compile(r"^(?P<stem>.+?)_s(?P<seed>\d+)$")


@dataclass
class Group:
    """Runs with one config but for the seed.  ``key`` identifies the config; ``runs`` the
    metrics paths, ``seeds`` their seeds (None where unknown), ``config`` the flattened
    config (path -> value) or None when grouped by file name."""

    key: tuple
    name: str
    config: dict | None
    runs: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    label: str = ""


def config_path(path: str) -> str | None:
    """The config.yaml that belongs to a run directory or metrics file, if there is one."""
    if os.path.isdir(path):
        p = os.path.join(path, "config.yaml")
    else:
        stem, _ = os.path.splitext(path)
        if os.path.basename(stem) == "metrics":
            p = os.path.join(os.path.dirname(path) or ".", "config.yaml")
        else:
            p = stem + ".config.yaml"
    return p if os.path.isfile(p) else None


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _defaults() -> dict:
    """Every key's default, flattened (dotted path -> plain value)."""
    from crossbar_ep.config.experiment import Config
    from crossbar_ep.schema import to_plain
    return _flatten(to_plain(Config()))


def read_config(path: str) -> dict | None:
    """Flattened config (dotted path -> value) of a run, keys it lacks at their defaults, or
    None when it has none."""
    from crossbar_ep.yamlio import load_file
    p = config_path(path)
    if p is None:
        return None
    raw = load_file(p, "run config")
    if not isinstance(raw, dict):
        raise CrossbarEPError(f"{p}: not a run config (needs a mapping of sections)")
    flat = _flatten(raw)
    for k, v in _defaults().items():
        if k not in flat and not any(k.startswith(f + ".") for f in flat):
            flat[k] = v
    return flat


def _kept(key: str) -> bool:
    return not any(key == i or (i.endswith(".") and key.startswith(i)) for i in IGNORED)


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    return v


def _natural(name: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.split(r"(\d+)", name))


def group_runs(paths, run_name) -> list:
    """Groups of the given runs (see the module text), in natural order of their labels;
    ``run_name(path)`` names a run (its folder or file stem)."""
    groups: dict = {}
    for p in paths:
        cfg = read_config(p)
        if cfg is not None:
            kept = {k: v for k, v in cfg.items() if _kept(k)}
            key = ("config", tuple(sorted((k, repr(_freeze(v))) for k, v in kept.items())))
            name = str(cfg.get("name") or run_name(p))
            seed = cfg.get("training.seed")
        else:
            stem = run_name(p)
            m = _SEED_SUFFIX.match(stem)
            name, seed = (m["stem"], int(m["seed"])) if m else (stem, 0)
            key, kept = ("name", name), None
        g = groups.setdefault(key, Group(key, name, kept))
        g.runs.append(p)
        g.seeds.append(seed)
    out = list(groups.values())
    for g in out:                           # runs in seed order, whatever order was given
        order = sorted(range(len(g.runs)), key=lambda i: (
            g.seeds[i] is None, g.seeds[i] if isinstance(g.seeds[i], int) else 0, g.runs[i]))
        g.runs, g.seeds = [g.runs[i] for i in order], [g.seeds[i] for i in order]
    _label(out)
    return sorted(out, key=lambda g: _natural(g.label))


def _show(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_show(x) for x in v) + "]"
    return str(v)


def _label(groups: list) -> None:
    """Name, plus the differing keys where names are shared (never two equal labels)."""
    by_name: dict = {}
    for g in groups:
        by_name.setdefault(g.name, []).append(g)
    for name, gs in by_name.items():
        if len(gs) == 1:
            gs[0].label = name
            continue
        cfgs = [g.config or {} for g in gs]
        keys = sorted({k for c in cfgs for k in c})
        diff = [k for k in keys if len({repr(_freeze(c.get(k))) for c in cfgs}) > 1]
        for g, c in zip(gs, cfgs):
            parts = [f"{k}={_show(c.get(k))}" for k in diff]
            g.label = name + (" " + " ".join(parts) if parts else "")
        seen: dict = {}
        for g in gs:                        # equal configs read from files without one
            n = seen[g.label] = seen.get(g.label, 0) + 1
            if n > 1:
                g.label += f" ({n})"


def mean_sd(values) -> tuple:
    """Mean and sample standard deviation (NaN with fewer than two values) of the finite
    values; (NaN, NaN) when none is finite."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, math.nan
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def _pm(values, digits: int = 2) -> str:
    m, s = mean_sd(values)
    if math.isnan(m):
        return "-"
    return f"{m:.{digits}f}" if math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"


def _seeds(g: Group) -> str:
    return ",".join("?" if s is None else str(s) for s in g.seeds)


def group_table(groups: list, summaries: dict, epochs, fmt: str = "md") -> str:
    """One row per group: runs, seeds, epochs (range), best / final / at-epoch test accuracy
    as mean ± sd in %, the best epochs, mean s/epoch; ``summaries`` maps a run path to its
    :func:`crossbar_ep.runs.summary.summarise_run` dict."""
    cols = (["group", "n", "seeds", "epochs", "best test %", "best epochs", "final %"]
            + [f"epoch {e} %" for e in epochs] + ["s/epoch"])
    body = []
    for g in groups:
        ss = [summaries[p] for p in g.runs]
        ep = sorted({s["epochs"] for s in ss})
        bep = sorted({s["best_epoch"] for s in ss})
        t = mean_sd([s["epoch_time_s"] for s in ss])[0]
        body.append([g.label, str(len(ss)), _seeds(g),
                     str(ep[0]) if len(ep) == 1 else f"{ep[0]}-{ep[-1]}",
                     _pm([s["best"] for s in ss]), ",".join(map(str, bep)),
                     _pm([s["final"] for s in ss])]
                    + [_pm([s["at"][e] for s in ss]) for e in epochs]
                    + ["-" if math.isnan(t) else f"{t:.1f}"])
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows(body)
        return buf.getvalue().rstrip("\n")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def group_series(groups: list, rows_of) -> dict:
    """label -> (epochs, mean %, min %, max %, n per epoch) of the test accuracy over each
    group's runs; ``rows_of(path)`` gives a run's metrics rows (accuracy as a fraction)."""
    out = {}
    for g in groups:
        per: dict = {}
        for p in g.runs:
            for r in rows_of(p):
                a = r.get("test_acc", math.nan)
                if not math.isnan(a):
                    per.setdefault(int(r["epoch"]), []).append(100 * a)
        ep = sorted(per)
        out[g.label] = (ep, [sum(per[e]) / len(per[e]) for e in ep],
                        [min(per[e]) for e in ep], [max(per[e]) for e in ep],
                        [len(per[e]) for e in ep])
    return out

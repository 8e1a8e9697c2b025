"""Side-by-side training of one experiment on the ideal digital and the crossbar backend.

Both runs share data, initial weights (the crossbar run programs the same Glorot draw into its
devices) and seed.  Writes ``digital/`` and ``crossbar/`` run directories, ``compare.md`` and
``compare.csv`` (best and final test accuracy, epochs, time) and ``compare.png``.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import replace

from crossbar_ep.config.experiment import Config
from crossbar_ep.io.files import atomic_text, atomic_write
from crossbar_ep.runs import train


def twin_configs(cfg: Config, devices: list | None = None) -> dict:
    """The digital twin (crossbar off) and the crossbar run(s) of one config: one crossbar run
    per device card in ``devices`` (labels ``crossbar-<card>``), or the config's own card."""
    if not cfg.crossbar.enabled:
        from crossbar_ep.errors import ConfigError
        raise ConfigError(f"{cfg.source}: crossbar.enabled: compare needs the crossbar backend "
                          f"switched on (crossbar.enabled: true and a crossbar.device)")
    runs = {"digital": replace(cfg, name=f"{cfg.name}-digital",
                               crossbar=replace(cfg.crossbar, enabled=False))}
    if not devices:
        runs["crossbar"] = cfg
        return runs
    from crossbar_ep.devices.card import load_card
    for dev in devices:
        load_card(dev)  # a bad card fails before any training
        stem = os.path.splitext(os.path.basename(dev))[0]
        runs[f"crossbar-{stem}"] = replace(cfg, name=f"{cfg.name}-{stem}",
                                           crossbar=replace(cfg.crossbar,
                                                            device=os.path.abspath(dev)))
    return runs


def twin_config(cfg: Config, path: str) -> Config:
    """``--twin EXPERIMENT.yaml``: the digital twin trained with that experiment's recipe
    (e.g. experiments/mnist_3hl_twin.yaml: SGD with momentum on the normalised update), checked
    to be the same network and data as ``cfg``."""
    from crossbar_ep.config.experiment import load_config
    twin = load_config(path, [f"training.epochs={cfg.training.epochs}"])
    _check_twin(cfg, twin, path)
    return replace(twin, crossbar=replace(twin.crossbar, enabled=False))


def _check_twin(cfg: Config, twin: Config, path: str) -> None:
    from crossbar_ep.errors import ConfigError
    for sec, key in (("model", "hidden"), ("model", "beta_i"), ("model", "feedback"),
                     ("data", "dataset"), ("data", "train_subset"), ("training", "seed")):
        a, b = getattr(getattr(cfg, sec), key), getattr(getattr(twin, sec), key)
        if a != b:
            raise ConfigError(f"{path}: {sec}.{key} is {b!r} but the compared experiment "
                              f"{cfg.source} has {a!r}; a digital twin must be the same net "
                              f"on the same data: use a twin with {sec}.{key}: {a!r}")


def twin_results(cfg: Config, run_dir: str) -> dict:
    """``--twin RUN_DIR``: the summary of an already trained (or running) digital twin from
    its run directory (config.yaml, metrics.json), checked against ``cfg``."""
    import json

    from crossbar_ep.config.experiment import load_config
    from crossbar_ep.errors import ConfigError
    paths = [os.path.join(run_dir, f) for f in ("config.yaml", "metrics.json")]
    for f in paths:
        if not os.path.isfile(f):
            raise ConfigError(f"{f}: no such file; --twin takes a run directory with at least "
                              f"one finished epoch (crossbar-ep run TWIN.yaml --out DIR)")
    _check_twin(cfg, load_config(paths[0]), paths[0])
    with open(paths[1], encoding="utf-8") as fh:
        h = json.load(fh)
    if not h:
        raise ConfigError(f"{paths[1]}: no finished epoch yet; wait for the twin's first epoch")
    best = max(h, key=lambda r: r["test_acc"])
    return {"best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
            "final_test_acc": h[-1]["test_acc"], "epochs": len(h),
            "time_s": sum(r["epoch_time_s"] for r in h), "history": h,
            "device": f"digital ({run_dir})"}


def run_pair(cfg: Config, out_dir: str, progress: bool = True, log=print,
             devices: list | None = None, twin: str | None = None) -> dict:
    """Train (or resume) the digital twin and the crossbar run(s); returns {label: summary}
    (each with its ``history`` and ``device``).  ``twin``: a run directory whose results are
    the digital row (nothing retrained), or an experiment file whose recipe trains it."""
    os.makedirs(out_dir, exist_ok=True)
    data = None
    results = {}
    runs = twin_configs(cfg, devices)
    if twin is not None and os.path.isdir(twin):
        results["digital"] = twin_results(cfg, twin)
        del runs["digital"]
    elif twin is not None:
        runs["digital"] = twin_config(cfg, twin)
    for label, c in runs.items():
        d = os.path.join(out_dir, label)
        if os.path.exists(os.path.join(d, train.CHECKPOINT)):
            run = train.resume(d, epochs=c.training.epochs, data=data, expect=c)
            log(f"{label}: resuming after epoch {run.epochs_done}")
        else:
            run = train.start(c, d, data=data)
            log(f"{label}: {d}")
        data = run.data
        results[label] = train.fit(run, progress=progress)
        results[label]["history"] = run.history
        results[label]["device"] = (os.path.basename(c.crossbar.device)
                                    if c.crossbar.enabled else "digital")
        write_report(cfg, results, out_dir)  # the report grows as runs finish
    return results


def table(results: dict) -> str:
    rows = ["| backend | device | best test acc (%) | best epoch | final test acc (%) | epochs "
            "| time (min) |", "|---|---|---|---|---|---|---|"]
    for label, s in results.items():
        rows.append(f"| {label} | {s.get('device', '')} | {100 * s['best_test_acc']:.2f} | "
                    f"{s['best_epoch']} | "
                    f"{100 * s['final_test_acc']:.2f} | {s['epochs']} | {s['time_s'] / 60:.2f} |")
    return "\n".join(rows)


def write_report(cfg: Config, results: dict, out_dir: str) -> None:
    from crossbar_ep.plots.curves import plot_comparison
    c = cfg.crossbar
    head = (f"# {cfg.name}: ideal digital vs crossbar\n\nperiphery: "
            f"DAC {c.periphery.dac_bits or 'ideal'} bits, ADC {c.periphery.adc_bits or 'ideal'} "
            f"bits, read noise {c.periphery.read_noise} ({c.periphery.read_noise_mode}); "
            f"update: {c.update.scheme}\n\n")
    atomic_text(os.path.join(out_dir, "compare.md"), head + table(results) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["backend", "device", "best_test_acc", "best_epoch", "final_test_acc", "epochs",
                "time_s"])
    for label, s in results.items():
        w.writerow([label, s.get("device", ""), s["best_test_acc"], s["best_epoch"], s["final_test_acc"],
                    s["epochs"], s["time_s"]])
    atomic_text(os.path.join(out_dir, "compare.csv"), buf.getvalue())
    atomic_write(os.path.join(out_dir, "compare.png"),
                        lambda fh: plot_comparison({k: v["history"] for k, v in results.items()},
                                                   fh, f"{cfg.name}: digital vs crossbar"))

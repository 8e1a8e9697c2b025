"""Convergence-driven settling: samples/s at equal accuracy, early stop against fixed T/K.

Trains the same experiment twice in one process from the same seed (same init, same data
order): phases of fixed length T/K, and phases that end once max |ds| per tau falls below
``--tolerance`` (``settling.early_stop``), and prints for each the training samples/s, the
mean steps per phase and the test accuracy after every epoch, then the speed ratio and the
accuracy difference.  Use ``--train`` / ``--test`` to measure on the first N samples.

    python benchmarks/bench_early_stop.py --config experiments/mnist_10hl_res.yaml \
        [--epochs 1] [--tolerance 1e-3] [--mode absolute|relative] [--train 10000]
        [--test 10000]

``--mode relative`` stops each layer at ``tolerance`` times its nudge gain
(``settling.tolerance_mode``, docs/model.md).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from crossbar_ep.config.experiment import load_config  # noqa: E402
from crossbar_ep.io.data import load_dataset  # noqa: E402
from crossbar_ep.runs import train  # noqa: E402


def measure(cfg, data, epochs: int) -> dict:
    run = train.setup(cfg, "unused", data)
    rows = [train.train_epoch(run, e, progress=False) for e in range(1, epochs + 1)]
    return {"samples_per_s": float(np.mean([r["samples_per_s"] for r in rows])),
            "steps": rows[-1]["settle_steps"], "acc": [r["test_acc"] for r in rows],
            "nudged_steps": rows[-1]["settle_time_nudged_s"] / cfg.settling.tau_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(HERE, "..", "experiments",
                                                     "mnist_10hl_res.yaml"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--mode", choices=("absolute", "relative"), default="absolute")
    ap.add_argument("--train", type=int, default=None, help="first N training samples")
    ap.add_argument("--test", type=int, default=None, help="first N test samples")
    a = ap.parse_args()
    sets = [f"training.epochs={a.epochs}"]
    if a.train:
        sets.append(f"data.train_subset={a.train}")
    if a.test:
        sets.append(f"data.test_subset={a.test}")
    fixed = load_config(a.config, sets + ["settling.early_stop=false"])
    early = load_config(a.config, sets + ["settling.early_stop=true",
                                          f"settling.tolerance={a.tolerance}",
                                          f"settling.tolerance_mode={a.mode}"])
    data = load_dataset(fixed.data, np.dtype(fixed.training.dtype), seed=fixed.training.seed)
    out = {"fixed T/K": measure(fixed, data, a.epochs),
           f"early stop {a.tolerance:g} {a.mode}": measure(early, data, a.epochs)}
    print(f"{fixed.name}: T/K {fixed.training.T}/{fixed.training.K}, "
          f"{data.x_train.shape[0]} train / {data.x_test.shape[0]} test samples")
    for name, r in out.items():
        acc = ", ".join(f"{100 * v:.2f}" for v in r["acc"])
        print(f"  {name:>27}: {r['samples_per_s']:8.1f} samples/s, free steps "
              f"{r['steps']:.1f}, nudged steps {r['nudged_steps']:.1f}, test acc per epoch [{acc}] %")
    f, e = out.values()
    print(f"speed ratio (early / fixed): {e['samples_per_s'] / f['samples_per_s']:.2f}x; "
          f"last-epoch accuracy difference: {100 * (e['acc'][-1] - f['acc'][-1]):+.2f} points")


if __name__ == "__main__":
    main()

"""Inference ceiling of the arrays: trained weights programmed into an experiment's crossbars
(its card, periphery, read noise and weight ranges) and evaluated on the test set.

Splits an in-situ gap into what the arrays cost at inference and what training on them
costs: give a digital twin's run directory to see how much of its accuracy survives being
programmed into the arrays (programming noise of the card, each device's bounds, the DAC,
ADC and read noise of every read); give an in-situ run with ``crossbar.enabled=false`` (or
ideal periphery) to read its own weights without the periphery.

    python benchmarks/inference_ceiling.py RUN_DIR [--config experiments/mnist_3hl_crossbar.yaml]
        [--set crossbar.weight_range_factor=[2,2,2,4]] [--set crossbar.enabled=false]

The weight scale S of each array comes from the experiment's initial weights (as in
training), so weights beyond the range clip; the line per matrix prints the largest |W| / S
and the rms programming error.  A measurement, not a ratio of times (docs/crossbar.md).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from crossbar_ep.config.experiment import load_config  # noqa: E402
from crossbar_ep.runs import train  # noqa: E402


def trained_weights(run_dir: str) -> dict:
    """Projection name -> dense trained matrix (``W:<name>``) of a run's checkpoint."""
    with np.load(os.path.join(run_dir, "checkpoint.npz")) as ck:
        return {k[2:]: ck[k] for k in ck.files if k.startswith("W:")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a finished run's directory (its checkpoint.npz)")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(HERE), "experiments",
                                                     "mnist_3hl_crossbar.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.config, ["traces.enabled=false", *args.overrides])
    run = train.setup(cfg, os.devnull)
    weights = trained_weights(args.run_dir)
    missing = {p.name for p in run.net.projections} - set(weights)
    if missing:
        print(f"{args.run_dir}: no trained {', '.join(sorted(missing))} in its checkpoint")
        return 1
    pulses = getattr(run.learner, "pulses", None)
    arrays = pulses.crossbars if pulses is not None else {}
    for name, w in weights.items():
        if name in arrays:
            cb = arrays[name]
            cb.program(w)
            err = float(np.sqrt(np.mean((cb.W_eff - w) ** 2)))
            print(f"{name}: on the arrays, largest |W| / S = {np.abs(w).max() / cb.scale:.2f}, "
                  f"rms programming error {err:.2e} (rms W {w.std():.2e})")
        elif name in run.net.ops:
            run.net.ops[name].load_state_dict({"W": w})
            print(f"{name}: digital")
    _, acc = train.evaluate(run.learner, run.data.x_test, run.data.y_test,
                            cfg.training.eval_batch_size)
    print(f"test accuracy {100 * acc:.2f} % ({run.data.x_test.shape[0]} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

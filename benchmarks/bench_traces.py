"""Cost of HDF5 traces: a training epoch with typical recording against the same epoch
without, measured in one run (interleaved epochs of two identical runs).

Typical cadence (the shipped crossbar experiment's): every epoch, one batch of 16 samples with
full settling trajectories, one tile's currents and ADC codes and the update's per-device pulse
counts; every array's conductances; per-device pulse totals; per-batch settle statistics.
Data: MNIST-shaped synthetic inputs (784 features, 10 classes), so no data set is needed.

    python benchmarks/bench_traces.py [--train 60000] [--epochs 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from crossbar_ep.config.experiment import load_config  # noqa: E402
from crossbar_ep.runs import train  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(os.path.dirname(HERE), "experiments",
                                                     "mnist_3hl_crossbar.yaml"))
    ap.add_argument("--train", type=int, default=60000, help="training samples per epoch")
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    common = ["data.dataset=synthetic", "data.synthetic_features=784",
              "data.synthetic_classes=10", f"data.synthetic_train={args.train}",
              f"data.synthetic_test={args.test}", f"training.epochs={args.epochs}",
              *args.overrides]
    tmp = tempfile.mkdtemp(prefix="bench-traces-")
    runs = {}
    for label, on in (("no traces", "false"), ("traces", "true")):
        cfg = load_config(args.config, [*common, f"traces.enabled={on}"])
        runs[label] = train.start(cfg, os.path.join(tmp, label.replace(" ", "_")))
    took = {k: 0.0 for k in runs}
    for epoch in range(1, args.epochs + 1):
        for label, run in runs.items():
            t = time.perf_counter()
            row = train.train_epoch(run, epoch, progress=False)
            if run.recorder is not None:
                run.recorder.end_epoch(row)
            took[label] += time.perf_counter() - t
    t = runs["traces"].cfg.traces
    size = os.path.getsize(os.path.join(runs["traces"].out_dir, t.file))
    print(f"config: {args.config}; {args.train} training samples per epoch, {args.epochs} "
          f"epochs; traces: batches {list(t.batches)}, {t.samples} samples, tiles "
          f"{list(t.tiles)}, conductances {t.conductances}, pulses {t.pulses}")
    for k in runs:
        print(f"{k:>10}: {took[k] / args.epochs:7.1f} s/epoch")
    print(f"trace file: {size / 1e6:.1f} MB for {args.epochs} epochs")
    print(f"traces / no traces epoch time: {took['traces'] / took['no traces']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

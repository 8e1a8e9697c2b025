"""Cost of a crossbar training epoch per pulse rule, relative to the ideal digital epoch, all
measured in one run (interleaved batches, so every rule sees the same machine load).

3HL-512 MNIST-shaped net, T/K 18/10, the shipped in-situ config (Li-ECRAM, 7-bit DAC, 9-bit
ADC per 256 x 256 tile, output read noise 0.01); the same batch size for every backend.  An
epoch is a fixed number of batches, so the batch-time ratio is the epoch-time ratio.

    python benchmarks/bench_pulse_rules.py [--batches 10] [--batch-size 500]
        [--schemes deterministic mixed_precision tiki_taka chopped_tiki_taka]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_crossbar import learner_for  # noqa: E402

from crossbar_ep.config.experiment import load_config  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(os.path.dirname(HERE), "experiments",
                                                     "mnist_3hl_crossbar.yaml"))
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--schemes", nargs="+", default=["deterministic", "mixed_precision",
                                                     "tiki_taka", "chopped_tiki_taka"])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.config, [f"training.batch_size={args.batch_size}",
                                    *args.overrides])
    runs = {"ideal": learner_for(replace(cfg, crossbar=replace(cfg.crossbar, enabled=False)))}
    for s in args.schemes:
        runs[s] = learner_for(replace(cfg, crossbar=replace(
            cfg.crossbar, update=replace(cfg.crossbar.update, scheme=s))))
    B = cfg.training.batch_size
    rng = np.random.default_rng(1)
    x = rng.random((B * 4, 784)).astype(cfg.training.dtype)
    y = rng.integers(0, 10, B * 4)
    for learner in runs.values():                   # warm-up (JIT, buffers)
        learner.train_batch(x[:B], y[:B])
    took = {k: 0.0 for k in runs}
    for i in range(args.batches):
        j = (i % 4) * B
        for k, learner in runs.items():
            t = time.perf_counter()
            learner.train_batch(x[j:j + B], y[j:j + B])
            took[k] += time.perf_counter() - t
    c = cfg.crossbar
    print(f"config: {args.config}; card {os.path.basename(c.device)}, DAC "
          f"{c.periphery.dac_bits} b, ADC {c.periphery.adc_bits} b, read noise "
          f"{c.periphery.read_noise} ({c.periphery.read_noise_mode}), tiles "
          f"{c.tile_rows}x{c.tile_cols}, batch {B}, {args.batches} batches each")
    for k in runs:
        print(f"{k:>18}: {took[k] / args.batches * 1e3:8.1f} ms/batch, "
              f"{took[k] / took['ideal']:5.2f}x the digital epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())

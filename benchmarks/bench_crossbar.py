"""Cost of a crossbar training epoch relative to the ideal backend, measured in one run.

Trains the 3HL-512 MNIST-shaped net (batch 500, T/K 18/10) for a number of batches on the
ideal digital backend and on the crossbar backend of the same config (default: Li-ECRAM card,
7-bit DAC, 9-bit ADC per 256 x 256 tile, output read noise, deterministic pulse updates, ideal
wires), interleaving the two so both see the same machine, and prints the time ratio.
An epoch is a fixed number of such batches, so the batch-time ratio is the epoch-time ratio.

    python benchmarks/bench_crossbar.py [--batches 20] [--set crossbar.device=...]
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

from crossbar_ep.config.build import build_network, make_learner, make_optimizer  # noqa: E402
from crossbar_ep.config.experiment import load_config  # noqa: E402


def learner_for(cfg):
    net = build_network(cfg, 784, 10, np.random.default_rng(0))
    return make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(), net.lr))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(os.path.dirname(HERE), "experiments",
                                                     "mnist_3hl_crossbar.yaml"))
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.config, ["training.batch_size=500", *args.overrides])
    digital = replace(cfg, crossbar=replace(cfg.crossbar, enabled=False))
    runs = {"ideal": learner_for(digital), "crossbar": learner_for(cfg)}
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
          f"{c.tile_rows}x{c.tile_cols}, update {c.update.scheme}")
    for k in runs:
        print(f"{k:>9}: {took[k] / args.batches * 1e3:8.1f} ms/batch, "
              f"{args.batches * B / took[k]:7.0f} samples/s")
    print(f"crossbar / ideal epoch time: {took['crossbar'] / took['ideal']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

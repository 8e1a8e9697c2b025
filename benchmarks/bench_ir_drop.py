"""Cost of IR drop in training: the crossbar epoch with wire resistance against the same
crossbar run with ideal wires, measured in one run; plus the accuracy of the first-order maps
between exact solves.

Trains the 3HL-512 MNIST-shaped net of experiments/mnist_3hl_crossbar.yaml (256 x 256 logical
tiles = 256 x 512 physical arrays, Li-ECRAM, 7/9-bit DAC/ADC, read noise) for a number of
batches with ideal wires and with wires (every read of the settling loop through the tiles'
nodal maps, an exact solve of every tile every ``refresh_every`` updates), interleaved so both
see the same machine.  The batch-time ratio is the epoch-time ratio.  At the end it solves
every tile exactly and prints how far the first-order maps had drifted from the exact ones.

    python benchmarks/bench_ir_drop.py [--batches 50] [--refresh-every 50] [--r-wire 0.1]
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
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--refresh-every", type=int, default=50)
    ap.add_argument("--r-wire", type=float, default=0.1, help="row and column wire (ohm)")
    ap.add_argument("--r-terminal", type=float, default=50.0, help="driver and sense (ohm)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    base = load_config(args.config, [f"training.batch_size={args.batch_size}",
                                     "traces.enabled=false", *args.overrides])
    w = replace(base.crossbar.wires, r_wire_row_ohm=args.r_wire, r_wire_col_ohm=args.r_wire,
                r_driver_ohm=args.r_terminal, r_sense_ohm=args.r_terminal,
                refresh_every=args.refresh_every)
    wired = replace(base, crossbar=replace(base.crossbar, wires=w))
    t = time.perf_counter()
    runs = {"ideal wires": learner_for(base)}
    t_ideal_build = time.perf_counter() - t
    t = time.perf_counter()
    runs["IR drop"] = learner_for(wired)
    t_build = time.perf_counter() - t
    xb = runs["IR drop"].pulses.crossbars
    n_tiles = sum(len(cb.row_tiles) * len(cb.col_tiles) for cb in xb.values())
    B = args.batch_size
    rng = np.random.default_rng(1)
    x = rng.random((B * 4, 784)).astype(base.training.dtype)
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
    # first-order maps against a fresh exact solve of every tile
    err, scale, drop = 0.0, 0.0, 0.0
    for cb in xb.values():
        tiles = [(i, j) for i in range(len(cb.row_tiles)) for j in range(len(cb.col_tiles))]
        lag = {t: cb.read_operand(t).copy() for t in tiles}
        cb.refresh(exact=True)
        for t in tiles:
            v = cb.read_operand(t)
            err = max(err, float(np.abs(lag[t] - v).max()))
            scale = max(scale, float(np.abs(v).max()))
            rt, ct = cb.row_tiles[t[0]], cb.col_tiles[t[1]]
            drop = max(drop, float(np.abs(v - cb.W_eff[ct, rt].T).max()))
    print(f"config: {args.config}; batch {B}, {args.batches} timed batches per backend; "
          f"wires {args.r_wire:g} ohm per segment, driver/sense {args.r_terminal:g} ohm; "
          f"exact solve every {args.refresh_every} updates")
    print(f"{n_tiles} tiles; exact solve of all tiles at programming: {t_build:.2f} s "
          f"(ideal wires build {t_ideal_build:.2f} s)")
    for k, v in took.items():
        print(f"  {k:<12} {1e3 * v / args.batches:9.1f} ms/batch")
    ratio = took["IR drop"] / took["ideal wires"]
    print(f"IR-drop epoch / ideal-wire epoch: {ratio:.2f}x")
    print(f"first-order maps vs exact after up to {args.refresh_every - 1} updates: max |dW| "
          f"{err:.3g} (largest weight {scale:.3g}; IR drop itself up to {drop:.3g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed of EP training on the ideal backend, as a fraction of the machine's GEMM peak.

Runs the Table 1 3HL setting (784-512-512-512-10, batch 500, T/K 18/10, Adam) for a few
hundred training batches and prints samples/s and

    ratio = (time NumPy's float32 GEMM needs for the same products) / (time we took)

where the GEMM time is measured in this same run, interleaved with the training batches, on
exactly the matrix shapes (and counts) one training step multiplies.  1.0 would mean every
cycle went into useful GEMM FLOPs; the element-wise work, copies and Python overhead are what
the ratio charges us for.

    python benchmarks/bench_settle.py [--batches 200] [--config experiments/mnist_3hl.yaml]
    python benchmarks/bench_settle.py --batches 50 --variant training.T=14 --variant training.K=7

``--variant KEY=VALUE`` (repeatable) also trains the config with those overrides, its batches
alternating with the recipe's in the same rounds, and prints its samples/s and its speed-up
over the recipe (a shorter T/K, early stopping, another solver: the speed side of a change
whose accuracy the per-epoch files show).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from crossbar_ep.config.build import build_network, make_learner, make_optimizer  # noqa: E402
from crossbar_ep.config.experiment import load_config  # noqa: E402


def step_gemms(net, settler, B: int) -> Counter:
    """Multiset of GEMM shapes (m, k, n) one EP training step performs: useful work only."""
    g: Counter = Counter()
    L = net.L
    g[(B, net.sizes[0], net.sizes[1])] += 1                       # drive W_0 x
    for phase_len, nudged in ((settler.T, False), (settler.K, True)):
        steps = settler._n_steps(phase_len)
        for k in settler.layers:
            w = (settler.map.width_nudged if nudged else settler.map.width_free)[k]
            if w:
                g[(B, w, net.sizes[k])] += steps
        n_read = steps if (nudged and settler.nudge_error == "recomputed") else 0
        g[(B, net.sizes[L], net.sizes[L + 1])] += 1 + n_read       # readouts
    for p in net.projections:                                      # local updates
        g[(net.sizes[p.dst], B, net.sizes[p.src])] += 1
    return g


class GemmReference:
    """NumPy GEMM on one training step's multiset of shapes, with operands made once."""

    def __init__(self, shapes: Counter, dtype):
        rng = np.random.default_rng(0)
        self.ops = []
        for (m, k, n), count in shapes.items():
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            self.ops.append((a, b, np.empty((m, n), dtype), count))

    def seconds_per_step(self) -> float:
        """Wall time of all of one step's products, each shape repeated as often as the step
        needs it."""
        t = time.perf_counter()
        for a, b, out, count in self.ops:
            for _ in range(count):
                np.matmul(a, b, out=out)
        return time.perf_counter() - t


def build(cfg):
    """(net, learner) of ``cfg`` from the same seed."""
    net = build_network(cfg, 784, 10, np.random.default_rng(0))
    return net, make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(), net.lr))


def train(learner, x, y, B: int, done: int, n: int) -> float:
    """Seconds for n training batches from batch ``done`` of the 8 cycled."""
    t0 = time.perf_counter()
    for i in range(n):
        j = ((done + i) % 8) * B
        learner.train_batch(x[j:j + B], y[j:j + B])
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(os.path.dirname(HERE), "experiments",
                                                     "mnist_3hl.yaml"))
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                    help="also time the config with this override, alternating")
    args = ap.parse_args()

    cfg = load_config(args.config)
    B, dtype = cfg.training.batch_size, np.dtype(cfg.training.dtype)
    net, learner = build(cfg)
    rng = np.random.default_rng(0)
    x = rng.random((B * 8, 784)).astype(dtype)   # MNIST-shaped inputs in [0, 1]
    y = rng.integers(0, 10, B * 8)
    variant = None
    if args.variant:
        vcfg = load_config(args.config, args.variant)
        if vcfg.training.batch_size != B:
            raise SystemExit("--variant: keep training.batch_size (the ratio is per sample)")
        variant = build(vcfg)[1]

    shapes = step_gemms(net, learner.settler, B)
    flops = sum(2 * m * k * n * c for (m, k, n), c in shapes.items())
    ref = GemmReference(shapes, dtype)
    for i in range(3):                             # warm-up: JIT compile, buffers, BLAS
        learner.train_batch(x[:B], y[:B])
        ref.seconds_per_step()
        if variant is not None:
            variant.train_batch(x[:B], y[:B])
    # Interleave training and reference GEMMs so both see the same machine conditions.
    rounds = max(1, min(args.batches, 10))
    took = ideal = took_v = 0.0
    done = 0
    for r in range(rounds):
        n = args.batches // rounds + (1 if r < args.batches % rounds else 0)
        took += train(learner, x, y, B, done, n)
        if variant is not None:
            took_v += train(variant, x, y, B, done, n)
        done += n
        ideal += ref.seconds_per_step() * n

    print(f"config: {args.config} ({'-'.join(map(str, net.sizes))}, batch {B}, "
          f"T/K {cfg.training.T}/{cfg.training.K}, {dtype})")
    print(f"batches: {args.batches}, wall {took:.2f} s, {args.batches * B / took:.0f} samples/s")
    print(f"useful GEMM work: {flops / 1e9:.2f} GFLOP per batch, "
          f"{flops * args.batches / took / 1e9:.1f} GFLOP/s achieved")
    print(f"NumPy GEMM on the same shapes: {flops * args.batches / ideal / 1e9:.1f} GFLOP/s")
    print(f"fraction of GEMM peak: {ideal / took:.3f}")
    if variant is not None:
        print(f"variant {' '.join(args.variant)}: {args.batches * B / took_v:.0f} samples/s, "
              f"{took / took_v:.2f}x the recipe's rate (alternating)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

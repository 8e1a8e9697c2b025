"""Speed of a conv EP training step on the ideal backend, as a fraction of NumPy's GEMM rate
on the same im2col shapes, measured in the same run.

Runs the Table 2 MNIST conv setting (Conv 32c-64c, batch 128, T/K 20/10) on random images
for a few batches and prints ms per batch, samples/s, the projected MNIST epoch time and

    ratio = (time NumPy's float32 GEMM needs for the products of one step) / (time we took)

the GEMM time measured interleaved with the training batches on exactly the patch-matrix
shapes (and counts) one training step multiplies: per settle step the forward read of every
conv layer after the first (conv1 of the input is read once per batch), the transposed read
of every conv layer feeding back, the readout (and the nudge's transposed readout in the
nudged phase); then the local updates.  The im2col/col2im copies, pooling and Python
overhead are what the ratio charges us for.  It also prints

    dense ratio = (useful FLOPs of one step / our time) / (NumPy's float32 GEMM rate on a
                  square dense product n x n x n)

with n the cube root of the step's largest product (m * k * n), rounded up to 64, measured
interleaved too (after every batch, for about a quarter of the step's GEMM time): the skinny patch GEMMs (k = 25 for conv1's patches, n = 32 or 64 output
channels) are memory-bound and run well under the square rate, which this ratio charges us
for as well.

    python benchmarks/bench_conv.py [--batches 5] [--config experiments/mnist_conv.yaml]
    python benchmarks/bench_conv.py --crossbar [--config experiments/mnist_conv_crossbar.yaml]
    python benchmarks/bench_conv.py --set settling.early_stop=true --set settling.tolerance=3e-3

With early stopping the ratio charges the steps saved as a gain (the GEMM reference counts the
full T and K): it is then the speed-up of the step count and the lowering together.

``--crossbar`` instead times a training batch of the crossbar config (DAC/ADC per patch
read, read noise, pulse updates) against the same config with the crossbar off, alternating,
and prints the ratio (target: at most 2).
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
from bench_settle import GemmReference  # noqa: E402


def step_gemms(net, T: int, K: int, B: int) -> Counter:
    """Multiset of GEMM shapes (m, k, n) of one conv EP training step (useful work)."""
    g: Counter = Counter()
    convs, L = net.convs, len(net.convs)
    c1 = convs[0].g
    g[(B * c1.positions, c1.patch, c1.c_out)] += 1                     # drive, once
    n_flat, n_out = net.ops["Wf"].n_in, net.ops["Wf"].n_out
    for steps, nudged in ((T, False), (K, True)):
        for k in range(1, L):
            gk = convs[k].g
            g[(B * gk.positions, gk.patch, gk.c_out)] += steps              # conv_k forward
            g[(B * gk.positions, gk.c_out, gk.patch)] += steps              # convT feedback
        g[(B, n_flat, n_out)] += steps + 1                                  # readouts
        if nudged:
            g[(B, n_out, n_flat)] += steps                                  # nudge
    for gk in (c.g for c in convs):
        g[(gk.c_out, B * gk.positions, gk.patch)] += 1                      # updates
    g[(n_out, B, n_flat)] += 1
    return g


class SquareGemm:
    """NumPy's GEMM rate on one square product n x n x n of the step's size class."""

    def __init__(self, shapes: Counter, dtype, reps: int = 10):
        n = round(max(m * k * n for m, k, n in shapes) ** (1 / 3))
        self.n = max(256, -(-n // 64) * 64)
        rng = np.random.default_rng(1)
        self.a, self.b = (rng.standard_normal((self.n, self.n)).astype(dtype)
                          for _ in range(2))
        self.out = np.empty((self.n, self.n), dtype)
        self.reps = reps

    def measure(self) -> tuple[float, float]:
        """(FLOPs, seconds) of ``reps`` products."""
        t = time.perf_counter()
        for _ in range(self.reps):
            np.matmul(self.a, self.b, out=self.out)
        return 2.0 * self.n ** 3 * self.reps, time.perf_counter() - t


def time_batches(cfg, batches: int) -> float:
    """Seconds per training batch of ``cfg`` (random images, after one warm-up batch)."""
    t, B = cfg.training, cfg.training.batch_size
    rng = np.random.default_rng(0)
    net = build_network(cfg, int(np.prod(cfg.image_shape())), 10, rng)
    learner = make_learner(cfg, net, make_optimizer(t, net.trainable(), net.lr))
    x = rng.random((B, net.sizes[0])).astype(t.dtype)
    y = rng.integers(0, 10, B)
    learner.train_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(batches):
        learner.train_batch(x, y)
    return (time.perf_counter() - t0) / batches


def crossbar_ratio(cfg, batches: int) -> int:
    from dataclasses import replace
    digital = replace(cfg, crossbar=replace(cfg.crossbar, enabled=False))
    xb = dg = 0.0
    for _ in range(batches):      # alternate so both see the same machine load
        xb += time_batches(cfg, 1)
        dg += time_batches(digital, 1)
    print(f"{cfg.name}: crossbar {1e3 * xb / batches:.0f} ms/batch, digital "
          f"{1e3 * dg / batches:.0f} ms/batch, ratio {xb / dg:.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(os.path.dirname(HERE), "experiments",
                                                     "mnist_conv.yaml"))
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--crossbar", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="override a config key (e.g. "
                    "settling.early_stop=true)")
    args = ap.parse_args()
    if args.crossbar and args.config.endswith("mnist_conv.yaml"):
        args.config = args.config.replace("mnist_conv.yaml", "mnist_conv_crossbar.yaml")
    cfg = load_config(args.config, args.overrides)
    if args.crossbar:
        return crossbar_ratio(cfg, args.batches)
    t, B = cfg.training, cfg.training.batch_size
    rng = np.random.default_rng(0)
    net = build_network(cfg, int(np.prod(cfg.image_shape())), 10, rng)
    learner = make_learner(cfg, net, make_optimizer(t, net.trainable(), net.lr))
    x = rng.random((B, net.sizes[0])).astype(t.dtype)
    y = rng.integers(0, 10, B)
    ref = GemmReference(step_gemms(net, t.T, t.K, B), np.dtype(t.dtype))
    square = SquareGemm(step_gemms(net, t.T, t.K, B), np.dtype(t.dtype))
    learner.train_batch(x, y)                 # compile and warm up
    g = ref.seconds_per_step()
    f, s = square.measure()                   # a quarter of the step's GEMM time each
    square.reps = max(square.reps, round(square.reps * 0.25 * g / s))
    ours = gemm = sq_flops = sq_time = 0.0
    for _ in range(args.batches):
        t0 = time.perf_counter()
        learner.train_batch(x, y)
        ours += time.perf_counter() - t0
        gemm += ref.seconds_per_step()
        f, s = square.measure()
        sq_flops, sq_time = sq_flops + f, sq_time + s
    flops = sum(2 * m * k * n * c for (m, k, n), c in step_gemms(net, t.T, t.K, B).items())
    per = ours / args.batches
    print(f"{cfg.name}: batch {B}, T/K {t.T}/{t.K}, {args.batches} batches")
    print(f"  ours:  {1e3 * per:.0f} ms/batch, {B / per:.1f} samples/s, "
          f"{flops / per / 1e9:.1f} GFLOP/s useful")
    print(f"  numpy GEMM on the same shapes: {1e3 * gemm / args.batches:.0f} ms/batch "
          f"({flops * args.batches / gemm / 1e9:.1f} GFLOP/s)")
    print(f"  projected MNIST epoch (60000 samples): {60000 / B * per / 60:.1f} min")
    print(f"  numpy GEMM, square {square.n}^3: {sq_flops / sq_time / 1e9:.1f} GFLOP/s")
    print(f"  ratio (GEMM time / our time): {gemm / ours:.3f}")
    print(f"  dense ratio (our useful FLOP rate / square GEMM rate): "
          f"{flops / per / (sq_flops / sq_time):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Signal-to-noise ratio of the in-situ EP update signal per layer, measured.

For the 3HL-512 net (or any experiment, conv nets included: ``--config
experiments/mnist_conv_crossbar.yaml``) at its initial weights on one MNIST batch (the shipped in-situ config,
ideal card so only the periphery is non-ideal), settles the phases once with exact reads
(the signal: delta_k = s+_k - s0_k, or (s+ - s-)/2 centered) and R times with the DAC, ADC
and output read noise of the config; the noise is the rms deviation of the noisy delta from
the exact one.  Prints, per beta_i x read-noise point, the per-layer rms signal, rms noise and
their ratio for the per-sample update signal (the batch-mean update gains ~sqrt(batch)).

    python benchmarks/snr_ep_signal.py [--beta-i 0.01 0.03 0.1 0.2]
        [--read-noise 0.003 0.01 0.03] [--set settling.average_last=4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from crossbar_ep.config.build import build_network, make_learner, make_optimizer  # noqa: E402
from crossbar_ep.config.experiment import load_config  # noqa: E402
from crossbar_ep.io.data import load_dataset  # noqa: E402
from crossbar_ep.model.learners import one_hot  # noqa: E402


def deltas(cfg, x, y1h) -> dict:
    """Layer k (1..L) -> the post-synaptic EP signal of one batch (dense or conv net)."""
    net = build_network(cfg, x.shape[1], 10, np.random.default_rng(cfg.training.seed))
    ep = make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(), net.lr))
    if hasattr(ep, "phases"):
        return ep.phases(x, y1h)[2]
    ep.local_signals(x, y1h)          # conv nets: rho(x+) - rho(x0) of every map
    return dict(ep.last_delta)


def adc_steps(cfg, x) -> dict:
    """Layer k -> the ADC step of the transposed read that feeds it back (from layer k + 1's
    array, or the readout's for the top layer), times its sense gain: the smallest change of
    the feedback drive the periphery resolves, in the layer's input units."""
    net = build_network(cfg, x.shape[1], 10, np.random.default_rng(cfg.training.seed))
    make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(), net.lr))
    bits = cfg.crossbar.periphery.adc_bits
    out = {}
    for b in net.blocks:
        op = net.ops[b.op]
        if b.transposed and 1 <= b.dst <= net.L and getattr(op, "bwd_range", None) and bits:
            step = max(op.bwd_range.values()) / (2 ** (bits - 1) - 1) * b.gain
            out[b.dst] = min(out.get(b.dst, np.inf), step)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(os.path.dirname(HERE), "experiments",
                                                     "mnist_3hl_crossbar.yaml"))
    ap.add_argument("--beta-i", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.2])
    ap.add_argument("--read-noise", type=float, nargs="+", default=[0.003, 0.01, 0.03])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    ideal = os.path.join(os.path.dirname(HERE), "device_models", "ideal.yaml")
    base = load_config(args.config, [f"crossbar.device={ideal}", "traces.enabled=false",
                                     *args.overrides])
    data = load_dataset(replace(base.data, train_subset=args.batch, test_subset=10),
                        np.dtype(base.training.dtype), seed=0)
    if base.model.conv.enabled:   # conv nets: the kernels' deltas are maps (B, H, W, C)
        print("conv net: signals are rho(x+) - rho(x0) of the maps")
    x, y1h = data.x_train[:args.batch], one_hot(data.y_train[:args.batch], 10, np.float32)
    t = base.training
    print(f"config {args.config} {' '.join(args.overrides)}; beta_f {t.beta_f}, nudging "
          f"{t.nudging}, average_last {base.settling.average_last}, T/K {t.T}/{t.K}, "
          f"DAC/ADC {base.crossbar.periphery.dac_bits}/{base.crossbar.periphery.adc_bits} b")
    layers = list(range(1, base.n_hidden + 1))
    print("| beta_i | read noise | " + " | ".join(
        f"layer {k} signal / noise (SNR)" if k == 1 else f"layer {k}" for k in layers) + " |")
    print("|---|---|" + "---|" * len(layers))
    steps = {}
    for bi in args.beta_i:
        cfg = replace(base, model=replace(base.model, beta_i=bi))
        clean = deltas(replace(cfg, crossbar=replace(cfg.crossbar, enabled=False)), x, y1h)
        steps[bi] = adc_steps(cfg, x)
        for rn in args.read_noise:
            per = replace(cfg.crossbar.periphery, read_noise=rn)
            noisy = replace(cfg, crossbar=replace(cfg.crossbar, periphery=per))
            err = {k: 0.0 for k in layers}
            for r in range(args.repeats):
                c = replace(noisy, crossbar=replace(noisy.crossbar, seed=r + 1))
                d = deltas(c, x, y1h)
                for k in err:
                    err[k] += float(np.mean((d[k] - clean[k]) ** 2)) / args.repeats
            cells = []
            for k in layers:
                s, n = float(np.sqrt(np.mean(clean[k] ** 2))), float(np.sqrt(err[k]))
                cells.append(f"{s:.1e} / {n:.1e} ({s / n:.2g})")
            print(f"| {bi} | {rn} | " + " | ".join(cells) + " |")
    print("\nADC step of the feedback read into each layer, times its sense gain (input units):")
    for bi, st in steps.items():
        print(f"beta_i {bi}: " + ", ".join(f"layer {k} {v:.1e}" for k, v in sorted(st.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

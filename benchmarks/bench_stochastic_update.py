"""Speed of the stochastic-coincidence pulsed update, the counting kernels measured in one run.

One 512 x 512 Li-ECRAM array (differential pairs), batch 100, bit length 31, one thread.  The
same array and signals are updated with the reference coincidence kernel (AND + popcount of
every column word with every row word) and with the default (``auto``: the listing kernel
when the streams are sparse, whose work follows the number of coincidences), interleaved so
both see the same machine.  Both kernels give the same counts from the same streams (checked
here and in tests/test_coincidence.py), so the pulse statistics are those of the reference.
Printed: pulse counts per second (bit streams and coincidence counting, the rule's own work)
and whole array updates per second (counts, device pulses, refresh), with their ratios, and
the share of an update's time in each part.

    python benchmarks/bench_stochastic_update.py [--lr 0.002] [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from crossbar_ep.crossbar.array import CrossbarMatrix  # noqa: E402
from crossbar_ep.crossbar.coincidence import coincidence_counts  # noqa: E402
from crossbar_ep.crossbar.pulses import StochasticCoincidence  # noqa: E402
from crossbar_ep.devices.card import load_card  # noqa: E402

KERNELS = ("reference", "auto")


def array(card, kernel: str, lr: float, seed: int = 1) -> CrossbarMatrix:
    W = 0.1 * np.random.default_rng(0).standard_normal((512, 512))
    rule = StochasticCoincidence(rng=np.random.default_rng(seed + 1), bl=31)
    rule.kernel = kernel
    return CrossbarMatrix(W, card, np.random.default_rng(seed), rule=rule, lr=lr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, default=0.002,
                    help="pulse gain (0.002: about 0.4 pulses per weight and update)")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    card = load_card(os.path.join(os.path.dirname(HERE), "device_models",
                                  "ecram_li_tang2018.yaml"))
    rng = np.random.default_rng(3)
    pre = np.tanh(rng.standard_normal((100, 512))).astype(np.float32)   # settled states
    delta = (0.01 * rng.standard_normal((100, 512))).astype(np.float32)  # nudged - free
    arrays = {k: array(card, k, args.lr) for k in KERNELS}
    counts = {k: coincidence_counts(arrays[k], pre, delta, args.lr * 100, 31, True,
                                    np.random.default_rng(5), k) for k in KERNELS}
    assert np.array_equal(counts["reference"], counts["auto"]), "kernels disagree"
    for cb in arrays.values():                      # warm-up (JIT, buffers)
        cb.update(pre, delta, 1.0)
    t_count = dict.fromkeys(KERNELS, 0.0)
    t_update = dict.fromkeys(KERNELS, 0.0)
    t_part = {"pulse counts": 0.0, "device pulses": 0.0, "refresh": 0.0}
    pulses = 0
    probe = array(card, "auto", args.lr, seed=7)      # where an update's time goes
    for r in range(args.rounds):
        for k in KERNELS:
            g = np.random.default_rng(100 + r)
            t = time.perf_counter()
            coincidence_counts(arrays[k], pre, delta, args.lr * 100, 31, True, g, k)
            t_count[k] += time.perf_counter() - t
            t = time.perf_counter()
            arrays[k].update(pre, delta, 1.0)
            t_update[k] += time.perf_counter() - t
        pulses += int(np.abs(arrays["auto"].last_counts).sum())
        t = time.perf_counter()
        n = coincidence_counts(probe, pre, delta, args.lr * 100, 31, True,
                               np.random.default_rng(200 + r))
        t1 = time.perf_counter()
        probe.fire(n)
        t2 = time.perf_counter()
        probe.refresh()
        t3 = time.perf_counter()
        t_part["pulse counts"] += t1 - t
        t_part["device pulses"] += t2 - t1
        t_part["refresh"] += t3 - t2
    n = args.rounds
    print(f"512 x 512 Li-ECRAM, batch 100, bl 31, one thread; lr {args.lr:g}: "
          f"{pulses / n / 512 ** 2:.3f} pulses per weight and update")
    for k in KERNELS:
        print(f"{k:>9}: pulse counts {n / t_count[k]:8.1f}/s, whole updates "
              f"{n / t_update[k]:7.1f}/s ({1e3 * t_update[k] / n:.2f} ms)")
    print(f"pulse counts: {t_count['reference'] / t_count['auto']:.2f}x the reference rate; "
          f"whole update: {t_update['reference'] / t_update['auto']:.2f}x")
    total = sum(t_part.values())
    print("an update's time: " + ", ".join(f"{k} {100 * v / total:.0f} %"
                                           for k, v in t_part.items())
          + " (device pulses: the card's pulse-by-pulse model with its energy, common to "
            "every rule)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

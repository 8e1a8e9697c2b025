"""Where the time of a stochastic-coincidence pulsed update goes, on one array.

One 512 x 512 Li-ECRAM array (differential pairs), batch 100, bit length 31, one thread: the
whole update (``CrossbarMatrix.update`` with ``StochasticCoincidence``) in updates per second,
and the shares of its three parts timed one after the other on a twin array: the pulse counts
(bit streams and coincidence counting, the rule's own work), the device pulses (the card's
pulse-by-pulse model with the programming energy, common to every rule) and the refresh of the
read operands.  The update is also timed in CPU time (``time.process_time``: on a machine
shared with other jobs, wall time also counts the time this process waits for a core).

``--reference`` also fires each round's counts on a third twin through the reference path
(:func:`crossbar_ep.devices.kernel.reference_pulse`: the loop over every device with the step
called as a first-class function, and the programming sum in NumPy), alternating with the fast
path, and prints the device-pulse time of both and their ratio.

    python benchmarks/bench_stochastic_update.py [--lr 0.002] [--rounds 20] [--reference]
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
from crossbar_ep.devices.kernel import reference_pulse  # noqa: E402


def array(card, lr: float, seed: int) -> CrossbarMatrix:
    W = 0.1 * np.random.default_rng(0).standard_normal((512, 512))
    rule = StochasticCoincidence(rng=np.random.default_rng(seed + 1), bl=31)
    return CrossbarMatrix(W, card, np.random.default_rng(seed), rule=rule, lr=lr)


def reference_fire(cb: CrossbarMatrix, n: np.ndarray) -> tuple[int, float]:
    """``cb.fire(n)`` by the reference path: the programming energy (J) summed in NumPy,
    then each side through the loop over every device (G- takes -n); returns (pulses fired,
    energy)."""
    c = cb.card
    energy = c.write_voltage_V ** 2 * c.pulse_width_s * sum(
        float(np.sum(np.abs(n) * dev.conductance())) for _, dev in cb.device_arrays())
    sides = zip((1, -1), cb.device_arrays())
    return sum(reference_pulse(dev, s * n) for s, (_, dev) in sides), energy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, default=0.002,
                    help="pulse gain (0.002: about 0.4 pulses per weight and update)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--reference", action="store_true",
                    help="also time the device pulses through the reference loop")
    args = ap.parse_args()
    card = load_card(os.path.join(os.path.dirname(HERE), "device_models",
                                  "ecram_li_tang2018.yaml"))
    rng = np.random.default_rng(3)
    pre = np.tanh(rng.standard_normal((100, 512))).astype(np.float32)   # settled states
    delta = (0.01 * rng.standard_normal((100, 512))).astype(np.float32)  # nudged - free
    cb, twin, ref = array(card, args.lr, 1), array(card, args.lr, 7), array(card, args.lr, 7)
    cb.update(pre, delta, 1.0)                       # warm-up (JIT, buffers)
    if args.reference:
        reference_fire(ref, cb.last_counts)
        ref.refresh()
    parts = {"pulse counts": 0.0, "device pulses": 0.0, "refresh": 0.0}
    t_update, cpu_update, t_ref, pulses = 0.0, 0.0, 0.0, 0
    for r in range(args.rounds):
        t, c = time.perf_counter(), time.process_time()
        cb.update(pre, delta, 1.0)
        t_update += time.perf_counter() - t
        cpu_update += time.process_time() - c
        pulses += int(np.abs(cb.last_counts).sum())
        t0 = time.perf_counter()
        n = coincidence_counts(twin, pre, delta, args.lr * 100, 31, True,
                               np.random.default_rng(200 + r))
        t1 = time.perf_counter()
        twin.fire(n)
        t2 = time.perf_counter()
        twin.refresh()
        t3 = time.perf_counter()
        for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[k] += dt
        if args.reference:
            t = time.perf_counter()
            reference_fire(ref, n)
            t_ref += time.perf_counter() - t
            ref.refresh()
    n = args.rounds
    print(f"512 x 512 Li-ECRAM, batch 100, bl 31, one thread; lr {args.lr:g}: "
          f"{pulses / n / 512 ** 2:.3f} pulses per weight and update")
    print(f"stochastic update: {n / t_update:.1f} updates/s ({1e3 * t_update / n:.2f} ms)")
    print(f"its CPU time: {1e3 * cpu_update / n:.2f} ms ({n / cpu_update:.1f} per second)")
    total = sum(parts.values())
    print("its time: " + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in parts.items()))
    if args.reference:
        fast = parts["device pulses"]
        print(f"device pulses: {1e3 * fast / n:.2f} ms; reference loop over every device "
              f"{1e3 * t_ref / n:.2f} ms ({t_ref / fast:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

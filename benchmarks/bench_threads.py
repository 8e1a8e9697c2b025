"""One and two threads: how each speed benchmark scales, and the serial share that limits it.

Runs each benchmark script as a subprocess with ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS`` and ``NUMBA_NUM_THREADS`` set to 1 and then to N (default 2), alternating,
``--repeats`` times each, reads its throughput from its output (samples/s or updates/s; the
best of the repeats) and prints, per benchmark, the 1-thread and N-thread figures, the
speed-up S and the serial share that Amdahl's law gives for it,

    serial share = (N / S - 1) / (N - 1),

the fraction of a one-thread step that did not run in parallel (the sense pass, the
activation, the Python overhead, memory-bound passes that one core already saturates).  The
machine should be otherwise idle: a second thread competes with whatever else runs.

    python benchmarks/bench_threads.py [--threads 2] [--repeats 2] [--only settle,conv]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: name -> (script and arguments, regex of the throughput in its output, unit)
BENCHMARKS = {
    "settle": (["bench_settle.py", "--batches", "20"], r"([\d.]+) samples/s", "samples/s"),
    "crossbar": (["bench_crossbar.py", "--batches", "5"],
                 r"crossbar:\s+[\d.]+ ms/batch,\s+([\d.]+) samples/s", "samples/s"),
    "conv": (["bench_conv.py", "--batches", "3"], r"ours:.*?([\d.]+) samples/s", "samples/s"),
    "stochastic_update": (["bench_stochastic_update.py", "--rounds", "10"],
                          r"([\d.]+) updates/s", "updates/s"),
}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")


def serial_share(speedup: float, n: int) -> float:
    """Amdahl's serial fraction of a step that runs ``speedup`` times faster on ``n``
    threads (0: perfectly parallel, 1: not at all)."""
    return (n / speedup - 1.0) / (n - 1.0)


def measure(name: str, threads: int) -> float:
    """Throughput of one run of a benchmark with every thread pool at ``threads``."""
    args, pattern, _ = BENCHMARKS[name]
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    out = subprocess.run([sys.executable, os.path.join(HERE, args[0]), *args[1:]], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=False)
    found = re.findall(pattern, out.stdout)
    if out.returncode != 0 or not found:
        raise SystemExit(f"{args[0]} (threads {threads}) did not report its throughput:\n"
                         f"{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return float(found[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="the larger thread count")
    ap.add_argument("--repeats", type=int, default=2, help="runs per thread count (best kept)")
    ap.add_argument("--only", default="", help="comma-separated benchmark names: "
                    + ", ".join(BENCHMARKS))
    args = ap.parse_args()
    if args.threads < 2:
        ap.error("--threads must be at least 2")
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from "
                 f"{', '.join(BENCHMARKS)}")
    print(f"| benchmark | 1 thread | {args.threads} threads | speed-up | serial share |")
    print("|---|---|---|---|---|")
    for name in names:
        best = {1: 0.0, args.threads: 0.0}
        for _ in range(args.repeats):
            for t in best:
                best[t] = max(best[t], measure(name, t))
        s = best[args.threads] / best[1]
        unit = BENCHMARKS[name][2]
        print(f"| {name} | {best[1]:.1f} {unit} | {best[args.threads]:.1f} {unit} | {s:.2f}x "
              f"| {serial_share(s, args.threads):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

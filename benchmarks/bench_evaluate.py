"""The cost of one retention time point (``crossbar-ep evaluate``) against the ideal backend's
test pass, measured in one run.

For a trained run: the test pass of the run's own digital learner, then (alternating, twice
each) one evaluation time point of the arrays a card programs: moving the devices' clocks to
the time (drift, read noise) and the same test pass through the arrays.  Prints both times
and their ratio (target: at most 1.5).

    python benchmarks/bench_evaluate.py RUN_DIR [--card pcm_joshi2020_inference] [--time 1y]
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--card", default="pcm_joshi2020_inference")
    ap.add_argument("--time", default="1y")
    ap.add_argument("--samples", type=int)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    from crossbar_ep.runs import train
    from crossbar_ep.runs.retention import Evaluator, RetentionPlan, parse_times
    run = train.resume(args.run_dir, record=False)
    plan = RetentionPlan(times=parse_times(args.time), card=args.card, samples=args.samples)
    ev = Evaluator(run, plan)
    learner, net = ev.learner("none", 0)
    arrays = ev._arrays(net)
    t_eval = plan.times[0][1]
    ev.accuracy(run.learner)                     # warm up both paths
    ev.accuracy(learner)
    ideal = xbar = 0.0
    for r in range(args.rounds):
        t0 = time.perf_counter()
        ev.accuracy(run.learner)
        ideal += time.perf_counter() - t0
        t0 = time.perf_counter()
        for cb in arrays.values():
            cb.advance_to(t_eval * (r + 1))
        acc = ev.accuracy(learner)[1]
        xbar += time.perf_counter() - t0
    n = ev.x.shape[0]
    print(f"{args.run_dir}: {n} test samples, card {args.card}, time point {args.time}")
    print(f"  ideal test pass: {ideal / args.rounds:.2f} s; one time point on the arrays: "
          f"{xbar / args.rounds:.2f} s (accuracy {100 * acc:.2f} %)")
    print(f"  ratio: {xbar / ideal:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Plain iteration against Anderson acceleration (``settling.solver``) on one net, in one run.

For each tolerance: the free and nudged phases of the same test samples settled by both
solvers with early stopping, reporting steps per phase (each step is one evaluation of the
map: one read of every array on a crossbar, so steps are reads), the step ratio, wall time
per batch of both, how far their fixed points differ, the test accuracy of the free phase and
the cosine of the normalised, centered EP update with the BP twin's gradient per matrix.

    python benchmarks/bench_solver.py                             # mnist_10hl_res at init
    python benchmarks/bench_solver.py --run RUN_DIR               # a trained run's weights
    python benchmarks/bench_solver.py --experiment mnist_conv --tolerances 1e-2,1e-3

Ratios come from one process on one machine; the step counts do not depend on the machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def load(args):
    from crossbar_ep.io.data import load_dataset
    from crossbar_ep.runs import train
    import crossbar_ep as cx
    if args.run:
        run = train.resume(args.run, record=False)
        return run.net, run.data, run.cfg.training
    from crossbar_ep.config.experiment import load_config
    cfg = load_config(args.experiment, [f"data.test_subset={args.samples}",
                                        "data.train_subset=1000"])
    data = load_dataset(cfg.data, np.dtype(cfg.training.dtype), cfg.training.seed)
    net, _ = cx.from_experiment(args.experiment, data=data)
    return net, data, cfg.training


def measure(net, x, y, training, solver: str, tol: float, cap: int):
    import crossbar_ep as cx
    from crossbar_ep.model.learners import EPLearner, one_hot
    from crossbar_ep.model.options import TrainingConfig
    nudge = "frozen" if training.nudge_error == "cumulative" else training.nudge_error
    st = cx.settler(net, cap, cap, early_stop=True, tolerance=tol, solver=solver,
                    nudge_error=nudge)
    y1h = one_hot(y, net.sizes[-1], net.dtype)
    t0 = time.perf_counter()
    free = st.free(x)
    nudged = st.nudged(free, y1h)
    wall = time.perf_counter() - t0
    ep = EPLearner(net, st, None, norm=dict(net.norm),
                   training=TrainingConfig(nudging="centered", nudge_error=nudge))
    up, _ = ep.updates(x, y1h)
    return free, nudged, wall, up


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="mnist_10hl_res")
    ap.add_argument("--run", help="a run directory: its trained weights")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--tolerances", default="1e-3,1e-4,1e-5")
    ap.add_argument("--cap", type=int, default=1000, help="steps per phase at most")
    args = ap.parse_args(argv)
    from crossbar_ep.model.learners import BPLearner, one_hot
    net, data, training = load(args)
    x = np.ascontiguousarray(data.x_test[:args.samples], dtype=net.dtype)
    y = data.y_test[:args.samples]
    grads, _ = BPLearner(net, None).gradients(x, one_hot(y, net.sizes[-1], net.dtype))
    print(f"{args.run or args.experiment}: {x.shape[0]} test samples, sizes {net.sizes}")
    print("tolerance  solver     free  nudged  ratio  ms/batch  test acc  max |s_aa - s|  "
          "min cos(EP, BP)")
    for tol in (float(t) for t in args.tolerances.split(",")):
        res = {s: measure(net, x, y, training, s, tol, args.cap) for s in ("plain", "anderson")}
        base = res["plain"][0].steps + res["plain"][1].steps
        for solver, (free, nudged, wall, up) in res.items():
            acc = float((free.p.argmax(1) == y).mean())
            dev = max(float(np.abs(a - b).max()) for a, b in
                      zip(free.s[1:], res["plain"][0].s[1:]))
            cos = min(float(np.vdot(up[n], grads[n]) /
                            (np.linalg.norm(up[n]) * np.linalg.norm(grads[n]) + 1e-300))
                      for n in grads if n in up and np.linalg.norm(grads[n]) > 0)
            ratio = base / max(free.steps + nudged.steps, 1)
            print(f"{tol:9.0e}  {solver:9s} {free.steps:5d}  {nudged.steps:6d}  {ratio:5.2f}  "
                  f"{1e3 * wall:8.1f}  {100 * acc:7.2f}%  {dev:14.2e}  {cos:15.4f}")


if __name__ == "__main__":
    main()

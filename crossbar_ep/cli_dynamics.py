"""``crossbar-ep diagnose-sweep``: the settling dynamics over a sweep (spectral radius, FTMLE,
convergence steps, EP-BP cosines), before and after training."""

from __future__ import annotations

import os
import sys


def add_parser(sub) -> None:
    ds = sub.add_parser(
        "diagnose-sweep", help="dynamics of every point of a sweep, before and after training",
        description="For every point of a sweep file: the coupling's spectral radius, the "
        "finite-time maximum Lyapunov exponent over T steps, the steps to converge "
        "(||s_t - s_{t-1}|| < --tol for 3 consecutive steps) and the cosine between the EP "
        "update and the BP gradient of every matrix, measured on one batch of training "
        "images with the initial weights and after training.epochs epochs.  Writes "
        "OUT/dynamics.csv (and OUT/trajectories.csv with --trajectory-units); resumes "
        "where it stopped (docs/model.md).")
    ds.add_argument("sweep_file")
    ds.add_argument("--out", help="output folder (default runs/dynamics-<sweep name>)")
    ds.add_argument("--samples", type=int, default=500,
                    help="training images measured (one batch; default 500)")
    ds.add_argument("--cap-init", type=int, default=500,
                    help="most steps to converge before training (default 500)")
    ds.add_argument("--cap-trained", type=int, default=1000,
                    help="most steps to converge after training (default 1000)")
    ds.add_argument("--tol", type=float, default=1e-6,
                    help="convergence threshold on ||s_t - s_{t-1}|| (default 1e-6)")
    ds.add_argument("--trajectory-units", type=int, default=0, metavar="N",
                    help="record the settling of N units per hidden layer of the first "
                    "sample, every step up to the cap (OUT/trajectories.csv)")


def run(args) -> int:
    from crossbar_ep.runs.diagnose_sweep import RESULTS, run_diagnose_sweep
    from crossbar_ep.runs.sweep import load_sweep
    out = args.out or os.path.join("runs", f"dynamics-{load_sweep(args.sweep_file).name}")
    try:
        rows = run_diagnose_sweep(args.sweep_file, out, args.samples, args.cap_init,
                                  args.cap_trained, args.tol, args.trajectory_units,
                                  log=lambda m: print(m, file=sys.stderr))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished points are in {out}/{RESULTS}: continue with "
              f"crossbar-ep diagnose-sweep {args.sweep_file} --out {out}", file=sys.stderr)
        return 130
    print(f"{len(rows)} rows: {out}/{RESULTS}")
    return 0

"""The compute claim: prior discrete-time EP against the FRE-RNN, measured in one run.

For one depth (2 or 3 hidden layers of 512), trains in one process, one after the other, on
the same data and seed:

- ``P-EP``: prior EP (experiments/mnist_<d>hl_pep.yaml: Ernoult et al. 2019's prototypical
  setting, full-strength symmetric feedback, shifted sigmoid, T/K 100/20 or 180/20, SGD,
  batch 20);
- ``FRE``: the FRE-RNN recipe (experiments/mnist_<d>hl.yaml: beta_i 0.01, T/K 10/10 or 18/10,
  Adam, batch 500);
- ``FRE b20``: the same recipe at P-EP's batch size (only ``training.batch_size`` changes);
  ``--b20-sgd`` uses the paper's batch-20 optimiser instead (SGD, lr 0.1, raw updates), which
  trains the lower layers at an effective rate of 0.1 beta_f beta_i^hops and learns slowly,

each until its test accuracy (full test set, evaluated every ``--eval-every`` epochs, not
timed) reaches ``--target`` or its training CPU time exceeds ``--max-cpu-s``.  Per recipe it
records the settle steps per sample (free + nudged, as run), the multiply-accumulates (MACs)
per sample and per epoch (settle reads, input drive, readout, nudge and the outer-product
updates, counted from the net's blocks), and the training time to the target, interpolated
linearly between the two evaluations around the crossing, as process CPU time (one thread:
robust to other work on the machine) and wall-clock time.

It prints the ratio P-EP / FRE of the time to the target at each recipe's own batch size and
at equal batch size (P-EP / FRE b20), split into

    fewer steps       = MACs per sample, P-EP / FRE (the settle steps, at equal widths)
    batch efficiency  = CPU time per MAC of FRE b20 / FRE (batch 20 against batch 500)
    everything else   = the rest: samples needed to reach the target, and the cost per MAC of
                        P-EP's recipe beyond the batch size (activation, biases, readout)

next to the paper's figures (its P-EP times came from other hardware), and writes everything
as JSON (``--out``).

    OMP_NUM_THREADS=1 python benchmarks/bench_compute.py --depth 2 \\
        --out docs/results/compute/compute_2hl.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from crossbar_ep.config.experiment import load_config  # noqa: E402
from crossbar_ep.io.data import load_dataset  # noqa: E402
from crossbar_ep.runs import train  # noqa: E402

# The paper's Table 1 (Liu & Chen): P-EP times from Ernoult et al.'s hardware, FRE times on an
# RTX A5000; (P-EP h, FRE h, P-EP epochs, FRE epochs, P-EP T+K, FRE T+K)
PAPER = {2: (1 + 56 / 60, (1 + 16 / 60) / 60, 50, 50, 120, 20),
         3: (8 + 27 / 60, (2 + 11 / 60) / 60, 100, 50, 200, 28)}


def recipes(depth: int, b20_sgd: bool = False) -> list:
    exp = os.path.join(REPO, "experiments")
    b20 = ["training.batch_size=20"]
    if b20_sgd:
        b20 += ["training.optimizer=sgd", "training.lr=0.1", "training.momentum=0"]
    return [("P-EP", os.path.join(exp, f"mnist_{depth}hl_pep.yaml"), []),
            ("FRE", os.path.join(exp, f"mnist_{depth}hl.yaml"), []),
            ("FRE b20", os.path.join(exp, f"mnist_{depth}hl.yaml"), b20)]


def macs_per_sample(net, free_steps: float, nudged_steps: float, recomputed: bool) -> float:
    """Multiply-accumulates of one training sample: settle reads between hidden layers per
    step, the input drive once, the nudge per nudged step, the readout (after each phase,
    and after every nudged step when the output error is recomputed), the updates."""
    L, n = net.L, net.sizes
    hidden = sum(n[b.src] * n[b.dst] for b in net.blocks if 1 <= b.src <= L and 1 <= b.dst <= L)
    drive = sum(n[b.src] * n[b.dst] for b in net.blocks if b.src == 0)
    nudge = sum(n[b.src] * n[b.dst] for b in net.blocks if b.src == L + 1)
    readout = n[L] * n[L + 1]
    updates = sum(n[p.src] * n[p.dst] for p in net.projections)
    reads_out = 2 + (nudged_steps if recomputed else 0)
    return ((free_steps + nudged_steps) * hidden + drive + nudged_steps * nudge
            + reads_out * readout + updates)


def train_to_target(label: str, cfg, source: str, data, target: float, eval_every: float,
                    max_cpu_s: float, log) -> dict:
    run = train.setup(cfg, "unused", data)
    learner, rng = run.learner, run.rng
    x, y = data.x_train, data.y_train
    n, bs = x.shape[0], cfg.training.batch_size
    every = max(1, int(round(eval_every * n)))
    cpu = wall = 0.0
    seen, free_steps, nudged_steps, batches = 0, 0.0, 0.0, 0
    curve = [(0, 0.0, 0.0, float("nan"))]
    next_eval, reached, epoch = every, None, 0
    while reached is None and cpu < max_cpu_s:
        epoch += 1
        perm = rng.permutation(n)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            c0, w0 = time.process_time(), time.perf_counter()
            st = learner.train_batch(x[idx], y[idx])
            cpu += time.process_time() - c0
            wall += time.perf_counter() - w0
            seen += idx.size
            free_steps += st.steps
            nudged_steps += st.nudged_steps
            batches += 1
            if seen >= next_eval or cpu >= max_cpu_s:
                next_eval += every
                acc = train.evaluate(learner, data.x_test, data.y_test,
                                     cfg.training.eval_batch_size)[1]
                curve.append((seen, cpu, wall, acc))
                log(f"  {label}: {seen / n:.2f} epochs, {cpu:.0f} s CPU, test {100 * acc:.2f}%")
                if acc >= target:
                    reached = _interpolate(curve, target)
                    break
                if cpu >= max_cpu_s:
                    break
    fs, ns = free_steps / batches, nudged_steps / batches
    mps = macs_per_sample(run.net, fs, ns, cfg.training.nudge_error == "recomputed")
    out = {"label": label, "experiment": os.path.relpath(source, REPO),
           "batch_size": bs, "free_steps": fs, "nudged_steps": ns, "steps_per_sample": fs + ns,
           "macs_per_sample": mps, "macs_per_epoch": mps * n, "n_train": n,
           "samples_seen": seen,
           "cpu_s": cpu, "wall_s": wall, "cpu_s_per_gmac": cpu / (mps * seen) * 1e9,
           "curve": [{"samples": s, "cpu_s": c, "wall_s": w, "test_acc": a}
                     for s, c, w, a in curve],
           "reached": reached is not None, "best_test_acc": max(a for *_, a in curve[1:])}
    if reached is not None:
        out.update(samples_to_target=reached[0], cpu_s_to_target=reached[1],
                   wall_s_to_target=reached[2])
    return out


def _interpolate(curve: list, target: float) -> tuple:
    """(samples, cpu, wall) where the test accuracy crosses ``target`` between the last two
    evaluations (linear; the first evaluation if it is already above)."""
    (s0, c0, w0, a0), (s1, c1, w1, a1) = curve[-2], curve[-1]
    if np.isnan(a0) or a0 >= target or a1 == a0:
        return s1, c1, w1
    f = (target - a0) / (a1 - a0)
    return s0 + f * (s1 - s0), c0 + f * (c1 - c0), w0 + f * (w1 - w0)


def ratios(res: dict) -> dict:
    pep, fre, b20 = res["P-EP"], res["FRE"], res["FRE b20"]
    steps = pep["macs_per_sample"] / fre["macs_per_sample"]
    batch = b20["cpu_s_per_gmac"] / fre["cpu_s_per_gmac"]
    out = {"fewer_steps": steps, "batch_efficiency": batch,
           "steps_ratio": pep["steps_per_sample"] / fre["steps_per_sample"],
           "cpu_per_epoch_own": (pep["cpu_s_per_gmac"] * pep["macs_per_epoch"])
           / (fre["cpu_s_per_gmac"] * fre["macs_per_epoch"]),
           "cpu_per_epoch_equal": (pep["cpu_s_per_gmac"] * pep["macs_per_epoch"])
           / (b20["cpu_s_per_gmac"] * b20["macs_per_epoch"])}
    for key, other in (("own", fre), ("equal", b20)):
        if pep.get("reached") and other.get("reached"):
            r = pep["cpu_s_to_target"] / other["cpu_s_to_target"]
            out[f"to_target_{key}"] = r
            out[f"to_target_{key}_wall"] = pep["wall_s_to_target"] / other["wall_s_to_target"]
            out[f"everything_else_{key}"] = r / (steps * (batch if key == "own" else 1.0))
        elif other.get("reached"):     # P-EP did not reach it: a lower bound
            out[f"to_target_{key}_at_least"] = pep["cpu_s"] / other["cpu_s_to_target"]
    return out


def report(depth: int, target: float, res: dict, rat: dict) -> str:
    lines = [f"{depth} hidden layers x 512, target {100 * target:.1f}% test accuracy",
             f"{'recipe':10s} {'batch':>5s} {'steps':>6s} {'GMAC/epoch':>11s} "
             f"{'CPU s/GMAC':>10s} {'epochs':>7s} {'CPU s':>8s} {'wall s':>8s} {'best %':>7s}"]
    for r in res.values():
        ep = r.get("samples_to_target", r["samples_seen"]) / r["n_train"]
        lines.append(f"{r['label']:10s} {r['batch_size']:5d} {r['steps_per_sample']:6.1f} "
                     f"{r['macs_per_epoch'] / 1e9:11.0f} {r['cpu_s_per_gmac']:10.4f} "
                     f"{ep:7.2f} {r.get('cpu_s_to_target', float('nan')):8.0f} "
                     f"{r.get('wall_s_to_target', float('nan')):8.0f} "
                     f"{100 * r['best_test_acc']:7.2f}" + ("" if r["reached"] else
                                                          "  (target not reached)"))
    p = PAPER[depth]
    lines += ["", "P-EP / FRE:"]
    if "to_target_own" in rat:
        lines.append(f"  time to target, own batch sizes (20 / 500): {rat['to_target_own']:.1f}x"
                     f" CPU ({rat['to_target_own_wall']:.1f}x wall) = fewer steps "
                     f"{rat['fewer_steps']:.2f} x batch efficiency {rat['batch_efficiency']:.2f}"
                     f" x everything else {rat['everything_else_own']:.2f}")
    if "to_target_equal" in rat:
        lines.append(f"  time to target, equal batch size (20): {rat['to_target_equal']:.1f}x "
                     f"CPU ({rat['to_target_equal_wall']:.1f}x wall) = fewer steps "
                     f"{rat['fewer_steps']:.2f} x everything else "
                     f"{rat['everything_else_equal']:.2f}")
    for key in ("own", "equal"):
        if f"to_target_{key}_at_least" in rat:
            lines.append(f"  time to target ({key} batch): at least "
                         f"{rat[f'to_target_{key}_at_least']:.1f}x (P-EP did not reach it)")
    lines.append(f"  cost of one epoch: {rat['cpu_per_epoch_own']:.1f}x at own batch sizes, "
                 f"{rat['cpu_per_epoch_equal']:.1f}x at equal batch size")
    lines.append(f"  paper (Table 1): {p[0] * 60:.0f} min for {p[2]} epochs of P-EP against "
                 f"{p[1] * 3600:.0f} s for {p[3]} epochs of FRE, {p[0] / p[1]:.0f}x; per epoch "
                 f"{p[0] / p[2] / (p[1] / p[3]):.0f}x; settle steps {p[4]} / {p[5]} = "
                 f"{p[4] / p[5]:.1f}x (P-EP timed on other hardware)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, choices=(2, 3), default=2)
    ap.add_argument("--target", type=float, default=0.97, help="test accuracy (fraction)")
    ap.add_argument("--eval-every", type=float, default=0.2, help="epochs between evaluations")
    ap.add_argument("--max-cpu-s", type=float, default=7200.0,
                    help="training CPU seconds per recipe before giving up")
    ap.add_argument("--only", action="append", help="run only these recipes (labels)")
    ap.add_argument("--b20-sgd", action="store_true",
                    help="FRE b20 with the paper's batch-20 SGD (lr 0.1) instead of the "
                    "FRE recipe's own optimiser")
    ap.add_argument("--train", type=int, help="first N training samples (a quick check)")
    ap.add_argument("--out", help="JSON file for the results")
    a = ap.parse_args(argv)
    sets = [f"data.train_subset={a.train}"] if a.train else []
    cfgs, res = {}, {}
    for label, path, over in recipes(a.depth, a.b20_sgd):
        if a.only and label not in a.only:
            continue
        cfgs[label] = (load_config(path, over + sets + ["traces.enabled=false"]), path, over)
    first = next(iter(cfgs.values()))[0]
    data = load_dataset(first.data, np.dtype(first.training.dtype), seed=first.training.seed)
    for label, (cfg, path, over) in cfgs.items():
        print(f"{label}: {os.path.relpath(path, REPO)} {' '.join(over)}, batch "
              f"{cfg.training.batch_size}, T/K {cfg.training.T}/{cfg.training.K}",
              file=sys.stderr)
        res[label] = train_to_target(label, cfg, path, data, a.target, a.eval_every,
                                     a.max_cpu_s, lambda m: print(m, file=sys.stderr))
        res[label]["overrides"] = over
        _write(a, res, {}, "")                 # what has finished, should the run stop
    rat = ratios(res) if len(res) == 3 else {}
    text = report(a.depth, a.target, res, rat) if rat else json.dumps(res, indent=1)
    print(text)
    _write(a, res, rat, text)
    return 0


def _write(a, res: dict, rat: dict, text: str) -> None:
    if not a.out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump({"depth": a.depth, "target": a.target, "eval_every": a.eval_every,
                   "max_cpu_s": a.max_cpu_s, "train_subset": a.train, "b20_sgd": a.b20_sgd,
                   "machine": {"platform": platform.platform(),
                               "processor": platform.processor(),
                               "cpus": os.cpu_count(), "numpy": np.__version__,
                               "threads": os.environ.get("OMP_NUM_THREADS")},
                   "recipes": res, "ratios": rat, "report": text}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())

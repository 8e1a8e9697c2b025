"""How the centered nudge builds up over the nudged phase, per hidden layer, measured.

Loads a trained digital run (its config and checkpoint), settles the free phase on test images and
then the nudged phases at +beta_f and -beta_f for K = 1 .. K_max steps, with exact reads
(ideal backend, ``average_last`` 1), and prints per hidden layer the mean |(s+ - s-)/2| after
each K, relative to the value at K_max (taken as converged).  It also prints what an update
averaged over the last m of K steps (``settling.average_last``) gets of that signal: the
nudge reaches layer k after L - k + 1 steps, so averaging more steps of a short phase also
averages the build-up and shrinks the lower layers' signal.

    python benchmarks/nudge_buildup.py RUN_DIR [--kmax 14] [--samples 500]
        [--average 4 8] [--k 10 14]
"""

from __future__ import annotations

import argparse

import numpy as np


def buildup(run_dir: str, kmax: int, samples: int) -> np.ndarray:
    """(kmax, L) mean |(s+ - s-)/2| of each hidden layer after K = 1..kmax nudged steps."""
    from crossbar_ep.config.build import make_settler
    from crossbar_ep.model.learners import one_hot
    from crossbar_ep.runs import train

    run = train.resume(run_dir, record=False)
    if run.cfg.crossbar.enabled:
        raise SystemExit(f"{run_dir}: a crossbar run reads with noise; pass a digital run "
                         f"(its twin) to measure the noiseless build-up")
    net, data = run.net, run.data
    x = data.x_test[:samples].astype(net.dtype)
    y = one_hot(data.y_test[:samples], data.n_classes, net.dtype)
    out = np.zeros((kmax, net.L))
    for K in range(1, kmax + 1):
        st = make_settler(run.cfg, net)
        st.average_last, st.K = 1, K
        free = st.free(x)
        pos, neg = st.nudged(free, y), st.nudged(free, y, sign=-1.0)
        out[K - 1] = [float(np.abs(0.5 * (pos.s[k] - neg.s[k])).mean())
                      for k in range(1, net.L + 1)]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--kmax", type=int, default=14)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--average", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--k", type=int, nargs="+", default=[10, 14])
    a = ap.parse_args(argv)
    sig = buildup(a.run_dir, a.kmax, a.samples)
    L = sig.shape[1]
    rel = sig / np.maximum(sig[-1], 1e-300)
    print(f"mean |(s+ - s-)/2| per hidden layer after K nudged steps (relative to K = {a.kmax})")
    print("   K  " + "  ".join(f"layer {k:<12d}" for k in range(1, L + 1)))
    for K in range(1, a.kmax + 1):
        print(f"{K:4d}  " + "  ".join(f"{sig[K - 1, i]:.3e} ({rel[K - 1, i]:.2f})"
                                      for i in range(L)))
    for K in a.k:
        for m in a.average:
            if m <= K <= a.kmax:
                frac = rel[K - m:K].mean(0)
                print(f"K = {K}, average_last {m}: " + ", ".join(
                    f"layer {k} {frac[k - 1]:.2f}" for k in range(1, L + 1)))


if __name__ == "__main__":
    main()

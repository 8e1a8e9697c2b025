"""What the DAC, the ADC and the read noise do to the in-situ EP update, measured on a run.

Loads a finished crossbar run (config, checkpoint, arrays) and, on a batch of training images,
computes every array's batch EP update ``dW`` (the update direction, before the pulse rule)
with exact reads of the trained conductances (no DAC, ADC or read noise: the reference), then
with each part of the run's periphery alone and all of it, at each ADC calibration
``adc_sigmas`` asked for, and with ``input_scaling: abs_max``.  Prints each array's relative
error ``||dW - dW_exact|| / ||dW_exact||`` (read-noise rows are one draw), and, per array and
read direction, the fraction of tile outputs the ADC clips at the free fixed point: a clipped
readout biases ``p`` and so ``y - p``, and a clipped feedback read cuts the nudge's path.

    python benchmarks/converter_error.py RUN_DIR [--samples 500] [--adc-sigmas 4 8 12]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np


def clipped(net, s: list) -> dict:
    """(array name, 'fwd' | 'bwd') -> fraction of tile outputs beyond the ADC full scale,
    for reads of the free-phase states ``s`` ([x, s_1, ..., s_L])."""
    out = {}
    for p in net.projections:
        op = net.ops[p.name]
        if getattr(op, "fwd_range", None) is None:
            continue
        for tr in (False, True):
            if tr and p.dst > net.L:         # the readout's transposed read carries y - p
                continue
            v = s[p.dst] if tr else s[p.src]
            ranges = op.bwd_range if tr else op.fwd_range
            n = hit = 0
            for rt in op.row_tiles:
                for ct in op.col_tiles:
                    W = op.W_eff[ct, rt]
                    part = v[:, ct] @ W if tr else v[:, rt] @ W.T
                    n += part.size
                    hit += int((np.abs(part) > ranges[(rt.start, ct.start)]).sum())
            out[p.name, "bwd" if tr else "fwd"] = hit / n
    return out


def main(argv=None) -> None:
    from crossbar_ep.model.learners import one_hot
    from crossbar_ep.runs import train

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--adc-sigmas", type=float, nargs="+", default=[4.0, 8.0, 12.0])
    a = ap.parse_args(argv)
    run = train.resume(a.run_dir, record=False)
    if not run.cfg.crossbar.enabled:
        raise SystemExit(f"{a.run_dir}: not a crossbar run")
    net, ep = run.net, run.learner
    arrays = {n: op for n, op in net.ops.items() if hasattr(op, "set_periphery")}
    base = {n: op.per for n, op in arrays.items()}
    x = np.ascontiguousarray(run.data.x_train[:a.samples], dtype=net.dtype)
    y1h = one_hot(run.data.y_train[:a.samples], run.data.n_classes, net.dtype)

    def update(**kw) -> dict:
        for n, op in arrays.items():
            op.set_periphery(replace(base[n], **kw))
        local, free = ep.local_signals(x, y1h)
        return {n: d.T @ pre for n, (pre, d, _) in local.items()}, free

    ref, _ = update(dac_bits=None, adc_bits=None, read_noise=0.0, input_scaling="none")
    names = list(arrays)
    print(f"{a.run_dir}: relative error of each array's batch EP update ({a.samples} "
          f"training images) against exact reads of the same conductances")
    print(f"{'periphery':34s}" + "".join(f"{n:>8s}" for n in names))
    p0 = next(iter(base.values()))
    rows = [(f"read noise {p0.read_noise:g} alone", dict(dac_bits=None, adc_bits=None)),
            (f"DAC {p0.dac_bits} b alone", dict(adc_bits=None, read_noise=0.0))]
    for sg in a.adc_sigmas:
        rows += [(f"ADC {p0.adc_bits} b alone, {sg:g} sigma",
                  dict(dac_bits=None, read_noise=0.0, adc_sigmas=sg)),
                 (f"DAC + ADC, {sg:g} sigma", dict(read_noise=0.0, adc_sigmas=sg)),
                 (f"all, {sg:g} sigma", dict(adc_sigmas=sg)),
                 (f"all, {sg:g} sigma, abs_max", dict(adc_sigmas=sg, input_scaling="abs_max"))]
    clips = {}
    for label, kw in rows:
        g, free = update(**{"input_scaling": "none", **kw})
        print(f"{label:34s}" + "".join(
            f"{np.linalg.norm(g[n] - ref[n]) / np.linalg.norm(ref[n]):8.3f}" for n in names))
        if label.startswith("all") and "input_scaling" not in kw:   # the full periphery
            clips[kw["adc_sigmas"]] = clipped(net, free.s)
    print("\nfraction of tile outputs the ADC clips at the free fixed point (full periphery)")
    for sg, c in clips.items():
        print(f"adc_sigmas {sg:g}: " + ", ".join(f"{n} {d} {f:.3f}" for (n, d), f in c.items()))


if __name__ == "__main__":
    main()

"""Which nudge source drives each layer's EP signal (``crossbar-ep diagnose --nudge-sources``).

A layered net with auxiliary heads has several nudge sources: the output's error into layer
L (block ``Wf``) and each head's error into its own layer (blocks ``A<l>``).  EP updates a
projection from the nudged-minus-free displacement of its target layer, whatever source
caused it.  A nudge travels down through feedback (gain beta_i per hop) but also *up*
through the forward projections (gain alpha, about 1 per hop), so a head's nudge moves
every layer above it, where it is no gradient of anything those weights control.  This
module measures the split: the nudged phase is run once with every source on and once per
source alone (the others' gains set to 0), from the same free state, and the mean
|s_nudged - s_free| per hidden layer is reported for each.  For small nudges the signed
displacements of the parts add up to the whole (the response is linear in the nudge); the
column ``nonlinear`` gives mean |ds_all - sum of the parts' ds| / mean |ds_all| per layer.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def nudge_blocks(net) -> list:
    """Indices into ``net.blocks`` of the nudge sources (an error into a hidden layer)."""
    return [i for i, b in enumerate(net.blocks) if b.src > net.L and b.dst <= net.L]


@dataclasses.dataclass
class SourceReport:
    layers: list          # hidden layers 1..L
    signal: dict          # 'all' and each source's op name -> mean |ds| per layer, (L,)
    samples: int
    nonlinear: np.ndarray  # mean |ds_all - sum of parts| / mean |ds_all| per layer, (L,)

    def text(self) -> str:
        names = list(self.signal)
        head = (["layer"] + [("output (Wf)" if n == "Wf" else n) for n in names]
                + ["nonlinear"])
        lines = [f"EP signal by nudge source: mean |s_nudged - s_free| per hidden layer over "
                 f"{self.samples} samples, each source alone (the others at gain 0)",
                 "  ".join(f"{h:>11}" for h in head)]
        for i, k in enumerate(self.layers):
            row = [f"{k:>11d}"] + [f"{self.signal[n][i]:>11.2e}" for n in names]
            row.append(f"{self.nonlinear[i]:>11.1%}")
            lines.append("  ".join(row))
        return "\n".join(lines)


def signal_by_source(net, settler_factory, x: np.ndarray, y1h) -> SourceReport:
    """Run the free phase and, per nudge source, the nudged phase with that source alone;
    ``settler_factory()`` builds a settle loop for ``net`` as it stands (it is called after
    the gains change).  ``x`` (B, n_in); ``y1h`` the (B, n_classes) one-hot labels, or a
    dict head index -> target (distillation targets, as ``EPLearner.targets`` gives).  The
    net's blocks are restored afterwards, also on error."""
    L = net.L
    orig = list(net.blocks)
    srcs = nudge_blocks(net)
    if not srcs:
        raise ValueError("the net has no nudge source into a hidden layer")
    runs = [("all", set(srcs))] + [(orig[i].op, {i}) for i in srcs]
    signal, ds = {}, {}
    x = x.astype(net.dtype)
    y1h = ({e: np.asarray(t, net.dtype) for e, t in y1h.items()} if isinstance(y1h, dict)
           else np.asarray(y1h, net.dtype))
    try:
        for label, keep in runs:
            net.blocks[:] = [dataclasses.replace(b, gain=0.0) if i in srcs and i not in keep
                             else b for i, b in enumerate(orig)]
            st = settler_factory()
            st.refresh()
            free = st.free(x)
            nudged = st.nudged(free, y1h)
            ds[label] = [np.asarray(nudged.s[k] - free.s[k], float) for k in range(1, L + 1)]
            signal[label] = np.array([float(np.abs(d).mean()) for d in ds[label]])
    finally:
        net.blocks[:] = orig
    parts = [lab for lab, _ in runs[1:]]
    nonlinear = np.array([float(np.abs(ds["all"][i] - sum(ds[p][i] for p in parts)).mean())
                          / max(float(np.abs(ds["all"][i]).mean()), 1e-300)
                          for i in range(L)])
    return SourceReport(list(range(1, L + 1)), signal, int(x.shape[0]), nonlinear)

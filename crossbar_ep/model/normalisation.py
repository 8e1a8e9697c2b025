"""EP update normalisers from the actual paths of a settle graph (docs/model.md).

For small gains the nudged state moves by the linear response of the free fixed point,
``ds = (I - D J)^-1 D n``: a sum over walks from every nudge source (the output nudge
``beta_f`` into layer L, each auxiliary head's ``beta_e`` into its layer) through feedback
hops (gain ``beta``) and forward hops (gain ``alpha``, 1 on W_0 and residual links).  The
normaliser of layer k is the gain of the strongest such walk (the leading-order term as
the feedback gains go to 0), in units of the reference twin's backward pass:

- a tied feedback hop ``b -> a`` reading forward matrix W (scale ``a_W``) contributes
  ``beta / a_W`` (BP's backward edge is ``a_W W^T``);
- a fixed random feedback hop contributes its gain (the feedback-alignment twin's edge is the
  fixed matrix itself);
- a forward hop contributes its scale.

A projection ``j -> k`` with scale ``a`` is divided by ``gain_k / a`` (BP's gradient carries
the factor ``a``); readouts and heads by 1.
"""

from __future__ import annotations

import numpy as np

GRADED = "graded"


def hop_gain(net, f) -> float:
    """Gain of feedback path ``f`` relative to the reference's backward edge."""
    if f.tied is None:
        return float(f.scale)
    scale = {p.name: p.scale for p in net.projections}[f.tied]
    return float(f.scale) / float(scale)


def nudge_sources(net) -> list:
    """(layer, gain) of every nudge block (an error source > L into a hidden layer)."""
    L = net.L
    return [(b.dst, float(b.gain)) for b in net.blocks
            if b.src > L and 1 <= b.dst <= L and b.gain != 0.0]


def path_gains(net) -> dict:
    """Hidden layer -> gain of the strongest walk from any nudge source (feedback hops at
    ``hop_gain``, forward hops at their scale); layers no walk reaches are absent."""
    L = net.L
    gain: dict = {}
    for k, g in nudge_sources(net):
        gain[k] = max(gain.get(k, 0.0), abs(g))
    edges = [(f.src, f.dst, abs(hop_gain(net, f))) for f in net.feedbacks]
    edges += [(p.src, p.dst, abs(p.scale)) for p in net.projections if 1 <= p.src and p.dst <= L]
    for _ in range(L):        # Bellman-Ford (max product); walks of at most L hops
        changed = False
        for a, b, g in edges:
            if a in gain and gain[a] * g > gain.get(b, 0.0) * (1 + 1e-12):
                gain[b] = gain[a] * g
                changed = True
        if not changed:
            break
    return gain


def normalisers(net) -> dict:
    """Projection name / ``b<k>`` -> divisor that brings its EP update to the reference
    gradient's scale (1 for readouts, heads and layers no nudge reaches)."""
    L, gain = net.L, path_gains(net)
    norm = {}
    for p in net.projections:
        g = gain.get(p.dst, 0.0) / abs(p.scale) if p.dst <= L else 1.0
        norm[p.name] = g if g > 0.0 else 1.0
    for k in net.b:
        g = gain.get(k, 0.0) if k <= L else 1.0
        norm[f"b{k}"] = g if g > 0.0 else 1.0
    return norm


def graded_gain(a: int, b: int, beta: tuple, alpha: float, tied_scale: float | None) -> float:
    """Gain that makes a skip feedback link ``b -> a`` (b > a) exactly as strong as the
    chain it bypasses: ``prod(beta_j / alpha)`` over j = a..b-1 for tied links (times the
    tied matrix's scale), ``prod(beta_j)`` for fixed random ones."""
    hops = np.prod([beta[j - 1] for j in range(a, b)])
    if tied_scale is None:
        return float(hops)
    return float(tied_scale * hops / alpha ** (b - a))


__all__ = ["hop_gain", "nudge_sources", "path_gains", "normalisers", "graded_gain"]

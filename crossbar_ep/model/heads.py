"""Auxiliary heads: intermediate error signals on chosen hidden layers (docs/model.md).

A head on hidden layer l is one more readout operator ``A{l}`` (shape (n_classes, n_l)) and
one more nudge source: its softmax output ``p_e = softmax(A s_l)`` is head index e (> L+1),
and in the nudged phase ``beta_e (t_e - p_e) A`` enters ``h_l`` through the transposed read
of the same operator (a crossbar array when A is on one).  Heads learn by the readout's local
rule at the free state, ``dA = (t_e - p_e0) s_l0^T / B`` (normaliser 1); inference uses the main
readout only.  With ``beta_e = 0`` the head only reads: the main network is unchanged.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.model.network import Block, Network, Projection
from crossbar_ep.model.normalisation import normalisers


def add_heads(net: Network, layers, beta=0.1, seed: int = 0, bp_weight=None,
              out_sizes=None, linear: bool = False) -> dict:
    """Add a label head on every hidden layer of ``layers`` (1-based); ``beta`` one gain or
    one per head; weights from their own generator (``seed``: Glorot-uniform for a dense
    net, U(+-1/sqrt(n_in)) for a conv net, whose heads read the flattened pooled map), so the
    main network's draws, data order and results do not change.  ``bp_weight``: the weight of
    each head's loss in the BP twin (one value, one per head, or None: ``beta_e / beta_f``).
    ``out_sizes`` (one per head; default the class count) and ``linear`` make feature-hint
    heads: a learned linear map R_l whose error ``f - R_l s_l`` nudges the layer (no softmax).
    Returns head index -> layer.  Recomputes the EP normalisers (heads are nudge sources)."""
    layers, betas, weights = _head_gains(net, layers, beta, bp_weight)
    rng = np.random.default_rng(seed)
    outs = list(out_sizes) if out_sizes is not None else [net.sizes[-1]] * len(layers)
    heads = {}
    for i, (k, b, w) in enumerate(zip(layers, betas, weights)):
        e = _new_head(net, k, i)
        _attach_head(net, k, e, net.init_readout(rng, outs[i], net.emitted_size(k)), b, w)
        if linear:
            net.linear_heads.add(e)
        heads[e] = k
    net.norm = normalisers(net)
    return heads


def _head_gains(net, layers, beta, bp_weight) -> tuple[list, list, list]:
    """(layers, nudge gain per head, BP-twin loss weight per head: default beta_e/beta_f)."""
    layers = [int(k) for k in layers]
    betas = list(beta) if np.ndim(beta) else [float(beta)] * len(layers)
    if bp_weight is None:
        weights = [b / net.beta_f for b in betas]
    else:
        weights = list(bp_weight) if np.ndim(bp_weight) else [float(bp_weight)] * len(layers)
    if len(betas) != len(layers) or len(weights) != len(layers):
        raise ValueError(f"heads on {layers}: give one beta (and bp_weight) or one per head")
    return layers, betas, weights


def _new_head(net, k: int, i: int) -> int:
    """Head index of the i-th head (on layer k, checked)."""
    if not 1 <= k <= net.L:
        raise ValueError(f"head on layer {k}: hidden layers are 1..{net.L}")
    if f"A{k}" in net.ops:
        raise ValueError(f"two heads on layer {k}")
    return net.L + 2 + i


def _attach_head(net, k: int, e: int, W: np.ndarray, beta: float, weight: float) -> None:
    """Readout ``A{k}`` (weights W, (n_out_e, n_in)) of layer k as head e: its read, its nudge
    (a transposed read with gain beta, none at 0), the readout's learning rate, its BP loss
    weight."""
    from crossbar_ep.model.operators import DigitalMatrix

    name = f"A{k}"
    net.projections.append(Projection(name, k, e))
    net.ops[name] = DigitalMatrix(W, name)
    net.head_sizes[e] = W.shape[0]
    net.blocks.append(Block(name, k, e))
    if beta != 0.0:
        net.blocks.append(Block(name, e, k, float(beta), True))
    net.lr[name] = net.lr["Wf"]
    net.head_weight[e] = float(weight)


def head_projections(net: Network) -> list:
    """The auxiliary heads' readout projections (destination > L + 1)."""
    return [p for p in net.projections if p.dst > net.L + 1]


def bp_head_terms(net: Network, s: list, targets, B: int) -> tuple[dict, dict]:
    """For the BP twin: (grads of the heads' readouts, extra -dLoss/de per hidden layer) of
    ``sum_e w_e CE(t_e, softmax(A_e e_l))`` averaged over the batch, with ``s`` the signals
    the heads read (states, or a conv net's pooled maps); ``targets`` is one (B, n_out)
    target or a dict head index -> target."""
    from crossbar_ep.model.activations import softmax

    grads, back = {}, {}
    for p in head_projections(net):
        if p.dst in net.linear_heads:      # feature hints need a teacher: EP students only
            continue
        A = net.W[p.name]
        t = targets[p.dst] if isinstance(targets, dict) else targets
        w = net.head_weight.get(p.dst, 1.0)
        d = w * (t - softmax(s[p.src] @ A.T)) / B
        grads[p.name] = d.T @ s[p.src]
        back[p.src] = back.get(p.src, 0.0) + d @ A
    return grads, back


__all__ = ["add_heads", "head_projections", "bp_head_terms"]

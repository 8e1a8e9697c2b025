"""Feedback alignment (FA; Lillicrap et al., Nat. Commun. 2016): backpropagation through the
feed-forward twin of the FRE-RNN with every transposed forward matrix in the backward pass
replaced by a fixed random matrix.  It is the baseline the FRE-RNN paper sets beside EP with
random (asymmetric) feedback (Table 2, rows 5-asymm and 10-asymm).

The random matrices are the network's own fixed feedback matrices (``model.feedback:
random``): the link ``j -> k`` (W of shape (n_k, n_j)) sends the error of layer k back through
the matrix of the feedback path ``k -> j`` (shape (n_k, n_j), drawn Glorot-uniform, never
trained), without its gain beta_i; the readout's error goes back through ``B_f``, the matrix
that carries EP's nudge.  So an FA run and an EP run of the same asymmetric config and seed
share their forward init and their feedback matrices.  The forward pass, the loss (softmax
cross-entropy, mean over the batch) and the updates of the forward matrices are BP's:

    delta_{L+1} = (y - p) / B
    delta_k     = rho'(h_k) * sum over links k -> m of scale * delta_m @ R_{k->m}
    dW_{j->k}   = scale * delta_k^T s_j                (ascent direction)

with ``R`` the random matrix where BP uses W.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.errors import ConfigError
from crossbar_ep.model.learners import BPLearner
from crossbar_ep.model.network import Network
from crossbar_ep.model.options import TrainingConfig


def feedback_matrices(net: Network) -> dict:
    """Projection name -> the fixed (n_dst, n_src) matrix its error goes back through, for
    every trained projection out of a hidden layer."""
    L = net.L
    out = {}
    for p in net.projections:
        if p.src < 1:
            continue
        if p.dst == L + 1:
            if net.nudge_tied:
                raise ConfigError("feedback alignment needs fixed random feedback: set "
                                  "model.feedback: random (the readout's error goes back "
                                  "through B_f)")
            out[p.name] = net.ops["Bf"].dense()
            continue
        partner = [f for f in net.feedbacks
                   if f.src == p.dst and f.dst == p.src and f.tied is None]
        if not partner:
            raise ConfigError(f"feedback alignment: the link {p.name} ({p.src} -> {p.dst}) has "
                              f"no fixed random feedback partner; set model.feedback: random "
                              f"(and no AGT graph, whose skips have none)")
        out[p.name] = net.ops[partner[0].name].dense()
    return out


class FALearner(BPLearner):
    """BP's forward pass and updates, errors sent back through fixed random matrices (dense
    and conv nets: a conv net's random feedback kernels)."""

    def __init__(self, net: Network, optimizer, *, training: TrainingConfig = TrainingConfig()):
        if net.head_sizes:
            raise ConfigError("feedback alignment trains the readout alone: remove "
                              "model.aux.layers")
        super().__init__(net, optimizer, training=training)
        self.feedback = feedback_matrices(net)

    def backward_matrix(self, p, W: dict) -> np.ndarray:
        return self.feedback[p.name]

"""Feedback alignment: the learner against a NumPy FA written here, against BP when the random
matrices are the transposes, training on synthetic data, and the config's checks."""

import numpy as np
import pytest
from conftest import small_config

from crossbar_ep.config.build import build_network, make_learner, make_optimizer
from crossbar_ep.errors import ConfigError
from crossbar_ep.model.feedback_alignment import FALearner
from crossbar_ep.model.learners import BPLearner, one_hot


def fa_setup(**model):
    cfg = small_config(model={"hidden": [7, 6, 5], "feedback": "random", "bias": True,
                              "alpha": 0.8, **model}, training={"algorithm": "fa"})
    net = build_network(cfg, 20, 4, np.random.default_rng(2))
    for k in net.b:
        net.b[k][:] = 0.1 * np.random.default_rng(k).standard_normal(net.b[k].shape)
    learner = make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(), net.lr))
    x = np.random.default_rng(5).random((9, 20))
    y = one_hot(np.arange(9) % 4, 4, net.dtype)
    return net, learner, x, y


def numpy_fa(W, R, b, x, y, alpha):
    """Plain FA on a chain: W[k] (n_{k+1}, n_k) for k = 0..L (the last is W_f), R[k] the
    fixed matrix that replaces W[k] in the backward pass, b[k] the bias of layer k+1."""
    L = len(W) - 1
    s, h = [x], []
    for k in range(L):
        a = (1.0 if k == 0 else alpha) * s[-1] @ W[k].T + b[k]
        h.append(a)
        s.append(np.tanh(a))
    z = s[-1] @ W[L].T + b[L]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    e = (y - p) / x.shape[0]
    g = {L: (e.T @ s[L], e.sum(0))}
    for k in range(L - 1, -1, -1):            # layer k+1's error, through R[k+1]
        scale_up = 1.0 if k + 1 == L else alpha
        e = scale_up * (e @ R[k + 1]) * (1 - s[k + 1] ** 2)
        g[k] = ((1.0 if k == 0 else alpha) * e.T @ s[k], e.sum(0))
    return g


def test_fa_matches_a_numpy_reference():
    net, learner, x, y = fa_setup()
    assert isinstance(learner, FALearner)
    L = net.L
    names = [f"W{k}" for k in range(L)] + ["Wf"]
    W = [net.W[n].astype(float) for n in names]
    R = [None] + [net.fixed[f"B{k}"].astype(float) for k in range(1, L)] + \
        [net.fixed["Bf"].astype(float)]
    b = [net.b[k].astype(float) for k in range(1, L + 2)]
    want = numpy_fa(W, R, b, x, y, 0.8)
    got, _ = learner.gradients(x, y)
    for k, n in enumerate(names):
        np.testing.assert_allclose(got[n], want[k][0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got[f"b{k + 1}"], want[k][1], rtol=1e-9, atol=1e-12)
    bp, _ = BPLearner(net, None).gradients(x, y)       # random feedback: not BP's direction
    assert not np.allclose(got["W0"], bp["W0"])
    np.testing.assert_allclose(got["Wf"], bp["Wf"])     # the readout's update is BP's


def test_fa_with_transposed_matrices_is_bp():
    net, learner, x, y = fa_setup(residual={"kind": "pairs", "pairs": [[1, 3]]},
                                  hidden=[6, 5, 6], beta_i=0.3)
    for name, R in learner.feedback.items():          # R := W: the backward pass of BP
        R[...] = net.W[name]
    fa, _ = learner.gradients(x, y)
    bp, _ = BPLearner(net, None).gradients(x, y)
    assert set(fa) == set(bp) and "R1_3" in fa
    for n in bp:
        np.testing.assert_allclose(fa[n], bp[n], rtol=1e-12, atol=1e-14)


def test_fa_trains():
    from crossbar_ep.runs import train
    cfg = small_config(model={"hidden": [24, 16], "feedback": "random"},
                       training={"algorithm": "fa", "epochs": 6, "lr": 0.01})
    run = train.setup(cfg, "unused")
    accs = [train.train_epoch(run, e, progress=False)["test_acc"] for e in range(1, 7)]
    assert accs[-1] > 0.6 and accs[-1] > accs[0]


@pytest.mark.parametrize("model, key", [({"feedback": "symmetric"}, "model.feedback"),
                                        ({"residual": {"kind": "agt"}}, "model.residual.kind"),
                                        ({"aux": {"layers": [1]}}, "model.aux.layers")])
def test_fa_config_errors_name_the_key(model, key):
    m = {"hidden": [6, 6, 6, 6], "feedback": "random", **model}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ": with training.algorithm"):
        small_config(model=m, training={"algorithm": "fa"})

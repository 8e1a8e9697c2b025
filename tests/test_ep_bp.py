"""EP-BP correspondence: for small beta_f, beta_i the normalised EP updates of the FRE-RNN
align with the backpropagation gradients of the equivalent feed-forward net."""

import numpy as np
import pytest
from conftest import small_config

from crossbar_ep.config.build import build_network, make_learner, make_optimizer
from crossbar_ep.model.learners import BPLearner, one_hot


def _cos(a, b):
    a, b = a.ravel(), b.ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("hidden", [[24, 20, 16], [16, 16]])
@pytest.mark.parametrize("nudge", ["recomputed", "frozen"])
def test_ep_updates_match_bp_gradients(hidden, nudge):
    cfg = small_config(model={"hidden": hidden, "beta_i": 1e-3, "bias": True},
                       training={"beta_f": 1e-3, "T": 60, "K": 60, "update_norm": "normalised",
                                 "nudge_error": nudge})
    rng = np.random.default_rng(11)
    net = build_network(cfg, 20, 4, rng)
    for name in net.W:
        net.W[name] *= 2.0  # away from the linear regime
    for k in net.b:
        net.b[k][:] = 0.1 * rng.standard_normal(net.b[k].shape)
    ep = make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(), net.lr))
    ep.settler.refresh()
    x = rng.random((40, 20))
    y1h = one_hot(rng.integers(0, 4, 40), 4, np.float64)
    g_ep, _ = ep.updates(x, y1h)
    g_bp, _ = BPLearner(net, None).gradients(x, y1h)
    assert set(g_ep) == set(g_bp)
    for name in g_bp:
        c = _cos(g_ep[name], g_bp[name])
        ratio = np.linalg.norm(g_ep[name]) / np.linalg.norm(g_bp[name])
        assert c > 0.99, (name, c)
        assert 0.9 < ratio < 1.1, (name, ratio)  # normalisation gives the BP scale too


def test_raw_updates_shrink_with_depth():
    """Without normalisation the update of layer k scales like beta_i^(L-k) (why deep
    nets need residual links or normalisation)."""
    cfg = small_config(model={"hidden": [16, 16, 16], "beta_i": 0.01},
                       training={"beta_f": 0.1, "T": 40, "K": 40})
    net = build_network(cfg, 20, 4, np.random.default_rng(0))
    ep = make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(), net.lr))
    rng = np.random.default_rng(1)
    g, _ = ep.updates(rng.random((30, 20)), one_hot(rng.integers(0, 4, 30), 4, np.float64))
    n = [np.linalg.norm(g[f"W{i}"]) for i in range(3)]
    assert n[2] > 20 * n[1] > 400 * n[0]


def test_bp_gradient_matches_finite_differences():
    cfg = small_config(model={"hidden": [7, 6, 5], "bias": True, "alpha": 0.8,
                              "residual": {"kind": "pairs", "pairs": [[1, 3]]}})
    rng = np.random.default_rng(2)
    net = build_network(cfg, 20, 4, rng)
    bp = BPLearner(net, None)
    x = rng.random((8, 20))
    y = rng.integers(0, 4, 8)
    y1h = one_hot(y, 4, np.float64)

    def loss():
        p = bp.predict(x)
        return -np.mean(np.log(p[np.arange(8), y]))

    g, _ = bp.gradients(x, y1h)
    params = dict(net.trainable())
    for name in ("W0", "W1", "R1_3", "Wf", "b2"):
        arr = params[name].reshape(-1)
        for idx in (0, arr.size // 2, arr.size - 1):
            old = arr[idx]
            arr[idx] = old + 1e-6
            lp = loss()
            arr[idx] = old - 1e-6
            lm = loss()
            arr[idx] = old
            fd = -(lp - lm) / 2e-6  # ascent direction
            assert g[name].reshape(-1)[idx] == pytest.approx(fd, rel=1e-4, abs=1e-9), name

"""Centered nudging (Laborieux et al. 2021) and noise-averaged phase reads.

Reference: the BP gradient of the feed-forward net the FRE-RNN tends to (beta_i -> 0), and
plain NumPy settling loops (settle_reference)."""

import numpy as np
import pytest
from conftest import small_config

from crossbar_ep.config.build import build_network, make_learner, make_optimizer
from crossbar_ep.model.learners import BPLearner, one_hot
from crossbar_ep.model.settle import settle_reference


def _learner(beta_f, nudging, hidden=(16, 12), average_last=1, seed=3):
    cfg = small_config(model={"hidden": list(hidden), "beta_i": 1e-6},
                       training={"beta_f": beta_f, "T": 80, "K": 80, "dtype": "float64",
                                 "update_norm": "normalised", "nudging": nudging},
                       settling={"average_last": average_last})
    rng = np.random.default_rng(seed)
    net = build_network(cfg, 20, 4, rng)
    for name in net.W:
        net.W[name] *= 2.5      # away from the linear regime: curvature makes the bias
    return net, make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(), net.lr))


def _bias(beta_f, nudging):
    net, ep = _learner(beta_f, nudging)
    rng = np.random.default_rng(7)
    x = rng.random((30, 20))
    y1h = one_hot(rng.integers(0, 4, 30), 4, np.float64)
    g_ep, _ = ep.updates(x, y1h)
    g_bp, _ = BPLearner(net, None).gradients(x, y1h)
    names = [n for n in g_bp if n != "Wf"]     # Wf's update is y - p0 in both: no beta
    num = sum(np.sum((g_ep[n] - g_bp[n]) ** 2) for n in names)
    return float(np.sqrt(num / sum(np.sum(g_bp[n] ** 2) for n in names)))


def test_centered_bias_is_second_order():
    """Halving beta_f halves the one-sided bias (O(beta)) and quarters the centered one
    (O(beta^2)); the centered bias is much smaller at the same beta."""
    one = [_bias(b, "one_sided") for b in (0.05, 0.025, 0.0125)]
    cen = [_bias(b, "centered") for b in (0.05, 0.025, 0.0125)]
    for a, b in zip(one, one[1:]):
        assert 1.7 < a / b < 2.3, one
    for a, b in zip(cen, cen[1:]):
        assert 3.5 < a / b < 4.5, cen
    assert cen[-1] < 0.1 * one[-1]


def test_centered_delta_matches_numpy_reference():
    net, ep = _learner(0.3, "centered", seed=5)
    rng = np.random.default_rng(1)
    x = rng.random((6, 20))
    y1h = one_hot(rng.integers(0, 4, 6), 4, np.float64)
    _, _, delta = ep.phases(x, y1h)
    s0 = settle_reference(net, x, 80)
    sp = settle_reference(net, x, 80, s_init=s0, y=y1h)
    net.beta_f = -net.beta_f            # the reference nudges with net.beta_f
    try:
        sm = settle_reference(net, x, 80, s_init=s0, y=y1h)
    finally:
        net.beta_f = -net.beta_f
    for k in (1, 2):
        np.testing.assert_allclose(delta[k], 0.5 * (sp[k] - sm[k]), atol=1e-12)


@pytest.mark.parametrize("m", [1, 4])
def test_phase_average_matches_reference(m):
    """With average_last m the update's states are the mean of the last m states of each
    phase of a plain NumPy loop; the nudged phase still starts from the final free state."""
    net, ep = _learner(0.2, "one_sided", average_last=m, seed=2)
    T = K = 80
    rng = np.random.default_rng(4)
    x = rng.random((5, 20))
    y1h = one_hot(rng.integers(0, 4, 5), 4, np.float64)
    local, free = ep.local_signals(x, y1h)
    traj = [settle_reference(net, x, t) for t in range(T - m + 1, T + 1)]
    s0 = traj[-1]
    nud = [settle_reference(net, x, t, s_init=s0, y=y1h) for t in range(K - m + 1, K + 1)]
    mean0 = [np.mean([s[k] for s in traj], axis=0) for k in range(3)]
    meanb = [np.mean([s[k] for s in nud], axis=0) for k in range(3)]
    np.testing.assert_allclose(free.s[2], s0[2], atol=1e-12)
    pre, d, _ = local["W1"]
    np.testing.assert_allclose(pre, mean0[1], atol=1e-12)
    np.testing.assert_allclose(d, meanb[2] - mean0[2], atol=1e-12)


def _noisy_readout(reads):
    """A layered net whose readout Wf alone sits on a crossbar with output read noise."""
    import os

    from conftest import REPO
    cfg = small_config(model={"hidden": [16, 12]},
                       training={"optimizer": "sgd", "lr": 0.05, "T": 10, "K": 6},
                       settling={"readout_reads": reads},
                       crossbar={"enabled": True, "layers": ["Wf"],
                                 "device": os.path.join(REPO, "device_models",
                                                        "rpu_gokmen2016.yaml"),
                                 "periphery": {"read_noise": 0.05}})
    net = build_network(cfg, 20, 4, np.random.default_rng(2))
    ep = make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(), net.lr))
    return net, ep


def test_readout_reads_average_matches_numpy_reference():
    """settling.readout_reads n: p is the softmax of the mean of n reads of Wf (each with
    its own read noise) at the phase's final state, plus the bias; the free phase reads Wf
    nowhere else, so replaying the array's noise stream reproduces the n reads."""
    from crossbar_ep.model.activations import softmax
    net, ep = _noisy_readout(5)
    assert ep.settler.readout_reads == 5
    x = np.random.default_rng(1).random((8, 20))
    op = net.ops["Wf"]
    state = op.rng.bit_generator.state
    free = ep.settler.free(x)
    op.rng.bit_generator.state = state
    sL = free.s[net.L]
    z = np.mean([op.read(sL) for _ in range(5)], axis=0) + net.b.get(net.L + 1, 0.0)
    np.testing.assert_allclose(free.p, softmax(z), atol=1e-12)
    op.rng.bit_generator.state = state
    one = softmax(op.read(sL) + net.b.get(net.L + 1, 0.0))
    assert np.abs(free.p - one).max() > 1e-4      # one read differs: the noise is there


def test_readout_reads_divide_the_logit_noise_variance():
    """n reads averaged carry 1/n of one read's noise variance (std of the logits over
    repeated reads of the same state)."""
    net, ep = _noisy_readout(1)
    st = ep.settler
    free = st.free(np.random.default_rng(1).random((50, 20)))
    S = {net.L: free.s[net.L]}
    logit = lambda n: np.log(st.head(net.L + 1, S, n))   # noqa: E731 (softmax: log p = z - c)
    def noise_var(n):
        z = np.array([logit(n) for _ in range(60)])
        z -= z.mean(axis=2, keepdims=True)         # the softmax's per-sample constant
        return float(z.var(axis=0).mean())
    v1, v4 = noise_var(1), noise_var(4)
    assert 3.4 < v1 / v4 < 4.6, (v1, v4)

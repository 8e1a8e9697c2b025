"""The registered activations: the fast float32 kernel against the NumPy definition, the
derivative against finite differences, and EP with the shifted sigmoid against its BP twin in
the small-beta limit."""

import numpy as np
import pytest
from conftest import small_config

from crossbar_ep.config.build import build_network, make_learner, make_optimizer
from crossbar_ep.errors import ConfigError
from crossbar_ep.model.activations import ACTIVATIONS, activate, activation_derivative, rho
from crossbar_ep.model.learners import BPLearner, one_hot


def test_shifted_sigmoid_is_ernoults_sigmoid():
    x = np.linspace(-3, 4, 71)
    want = 1 / (1 + np.exp(-(4 * (x - 0.5))))           # Ernoult et al. 2019, 'sigm'
    np.testing.assert_allclose(rho(x, "shifted_sigmoid"), want, rtol=1e-15)
    assert rho(np.array([0.5]), "shifted_sigmoid")[0] == 0.5
    with pytest.raises(ValueError, match="use one of"):
        rho(x, "relu")


@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_kernel_matches_the_numpy_definition(kind):
    rng = np.random.default_rng(0)
    h = rng.normal(0, 2, (7, 33)).astype(np.float32)
    add = rng.normal(0, 1, (1, 33)).astype(np.float32)
    copy = np.zeros_like(h)
    want = rho(h.astype(np.float64) + add, kind)
    got = activate(h.copy(), kind, add, copies=(copy,))
    np.testing.assert_allclose(got, want, atol=2e-7)
    np.testing.assert_array_equal(copy, got)
    got64 = activate(h.astype(np.float64), kind, add[0].astype(np.float64))
    np.testing.assert_allclose(got64, want, atol=1e-15)


@pytest.mark.parametrize("kind", ("tanh", "shifted_sigmoid"))
def test_derivative_against_finite_differences(kind):
    h = np.linspace(-2, 3, 41)
    e = 1e-6
    fd = (rho(h + e, kind) - rho(h - e, kind)) / (2 * e)
    np.testing.assert_allclose(activation_derivative(rho(h, kind), h, kind), fd, atol=1e-8)


def test_ep_with_the_shifted_sigmoid_tends_to_its_bp_twin():
    cfg = small_config(model={"hidden": [12, 10], "beta_i": 0.001,
                              "activation": "shifted_sigmoid", "bias": True},
                       training={"beta_f": 0.001, "T": 60, "K": 60,
                                 "update_norm": "normalised"})
    net = build_network(cfg, 20, 4, np.random.default_rng(0))
    learner = make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(), net.lr))
    x = np.random.default_rng(1).random((30, 20))
    y = one_hot(np.arange(30) % 4, 4, net.dtype)
    ep, free = learner.updates(x, y)
    bp, p = BPLearner(net, None).gradients(x, y)
    np.testing.assert_allclose(free.p, p, atol=5e-4)          # same fixed point at beta -> 0
    for name in bp:
        cos = np.dot(ep[name].ravel(), bp[name].ravel()) / (
            np.linalg.norm(ep[name]) * np.linalg.norm(bp[name]))
        assert cos > 0.999, name
        np.testing.assert_allclose(np.linalg.norm(ep[name]), np.linalg.norm(bp[name]),
                                   rtol=0.02)


def test_unknown_activation_is_a_config_error():
    with pytest.raises(ConfigError, match="shifted_sigmoid"):
        small_config(model={"activation": "relu"})

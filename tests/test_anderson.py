"""settling.solver: anderson: the mixing against a plain NumPy Anderson, the GMRES property
on a linear map, the same fixed points as plain iteration in fewer steps (dense, residual and
conv nets, crossbar arrays), EP against BP with it, and the config's refusals."""

import numpy as np
import pytest

import crossbar_ep as cx
from crossbar_ep.model.anderson import Anderson, anderson_reference
from crossbar_ep.model.learners import BPLearner, EPLearner, one_hot
from crossbar_ep.model.options import TrainingConfig


def linear_map(n=40, rho=0.95, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    J = Q @ np.diag(rho * np.cos(np.linspace(0, np.pi, n))) @ Q.T   # eigenvalues in +-rho
    b = rng.standard_normal(n)
    return (lambda v: J @ v + b), np.linalg.solve(np.eye(n) - J, b)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_mixing_matches_the_numpy_reference(beta):
    f, _ = linear_map(rho=0.6)
    s0 = np.zeros(40)
    ref = anderson_reference(f, s0, 12, m=3, beta=beta)
    mix, s = Anderson(3, beta), s0[None].copy()
    for k in range(12):
        s = mix.step(s, f(s[0])[None])
        np.testing.assert_allclose(s[0], ref[k + 1], rtol=1e-7, atol=1e-9)


def test_on_a_linear_map_it_converges_in_krylov_steps():
    """With full depth, Anderson on s <- J s + b is GMRES: exact (to rounding) within n + 1
    steps of an n-dimensional map, where plain iteration at rho = 0.95 needs hundreds."""
    f, fixed = linear_map(n=12, rho=0.95)
    mix, s = Anderson(12), np.zeros((1, 12))
    for _ in range(14):
        s = mix.step(s, f(s[0])[None])
    assert np.abs(s[0] - fixed).max() < 1e-8
    p = np.zeros(12)
    for _ in range(14):
        p = f(p)
    assert np.abs(p - fixed).max() > 1e-3


def steps_to(net, x, tol, **kw):
    st = cx.settler(net, 3000, 10, early_stop=True, tolerance=tol, **kw)
    return st.free(x)


@pytest.mark.parametrize("net", ["chain", "residual"])
def test_same_fixed_point_in_fewer_steps_on_dense_nets(net):
    if net == "chain":
        n = cx.make_network([20, 64, 64, 64, 64, 64, 4], seed=0, beta_i=0.2, dtype="float64")
    else:
        n = cx.make_network([20, *[32] * 7, 4], seed=1, beta_i=0.15, dtype="float64",
                            residual=[(1, 4), (4, 7)])
    x = np.random.default_rng(0).random((8, 20))
    plain = steps_to(n, x, 1e-9)
    aa = steps_to(n, x, 1e-9, solver="anderson")
    assert aa.residual < 1e-9 and plain.residual < 1e-9
    for a, b in zip(aa.s[1:], plain.s[1:]):
        np.testing.assert_allclose(a, b, atol=1e-7)
    assert aa.steps * 1.5 <= plain.steps, (aa.steps, plain.steps)


def test_a_hard_phase_falls_back_to_plain_steps():
    """Where mixing stalls (a strongly coupled tanh chain), the safeguard restarts and then
    keeps plain steps: the phase still converges, in about the plain count."""
    n = cx.make_network([20, 64, 64, 64, 64, 64, 4], seed=0, beta_i=0.3, dtype="float64")
    x = np.random.default_rng(0).random((8, 20))
    plain = steps_to(n, x, 1e-8)
    aa = steps_to(n, x, 1e-8, solver="anderson")
    assert aa.residual < 1e-8 and aa.steps < 1.5 * plain.steps


def test_conv_nets_and_crossbar_arrays_take_the_solver():
    net = cx.make_conv_network((1, 8, 8), (3, 4), 5, seed=0, kernel=3, padding=1,
                               beta_i=0.2, beta_f=0.2, dtype="float64", activation="tanh")
    x = np.random.default_rng(0).random((2, 64))     # inputs whose free phase has a fixed
    # point: max-pooling makes the map discontinuous and many inputs chatter between switches
    plain = steps_to(net, x, 1e-10)
    aa = steps_to(net, x, 1e-10, solver="anderson")
    assert aa.residual < 1e-10 and aa.steps < plain.steps
    for a, b in zip(aa.s[1:], plain.s[1:]):
        np.testing.assert_allclose(a, b, atol=1e-8)
    dense = cx.make_network([12, 16, 16, 3], seed=0, beta_i=0.3)
    cx.attach_crossbar(dense, "W1", "ideal")
    xb = np.random.default_rng(3).random((5, 12)).astype(np.float32)
    model = cx.ep_learner(dense, T=200, K=100, early_stop=True, tolerance=1e-5,
                          solver="anderson", optimizer="sgd")
    reads = []
    dense.ops["W1"].observers.append(type("R", (), {"on_read": lambda s, op, v, t:
                                                    reads.append(t)})())
    free = model.settle(xb)
    assert free.residual < 1e-5 and free.steps < 200 and len(reads) >= free.steps


def test_ep_matches_bp_with_anderson_phases():
    net = cx.make_network([10, 12, 10, 3], seed=2, beta_i=1e-3, beta_f=1e-3, dtype="float64")
    rng = np.random.default_rng(1)
    x, y1h = rng.random((6, 10)), one_hot(np.arange(6) % 3, 3, np.float64)
    st = cx.settler(net, 500, 500, early_stop=True, tolerance=1e-12, solver="anderson")
    ep = EPLearner(net, st, None, norm=dict(net.norm),
                   training=TrainingConfig(nudging="centered"))
    up, free = ep.updates(x, y1h)
    gr, _ = BPLearner(net, None).gradients(x, y1h)
    for name in ("W0", "W1", "Wf"):
        c = np.vdot(up[name], gr[name]) / (np.linalg.norm(up[name]) * np.linalg.norm(gr[name]))
        assert c > 0.999, (name, c)
        assert np.linalg.norm(up[name]) == pytest.approx(np.linalg.norm(gr[name]), rel=0.02)


@pytest.mark.parametrize("extra,match", [
    ({"mode": "ode"}, "settling.mode: discrete"),
    ({"nudge_error": "cumulative"}, "no fixed point"),
    ({"average_last": 3}, "average_last: 1"),
])
def test_the_config_refuses_what_anderson_does_not_define(extra, match):
    net = cx.make_network([10, 12, 10, 3], seed=0)
    with pytest.raises(cx.ConfigError, match=match):
        cx.settler(net, 20, 10, solver="anderson", **extra)

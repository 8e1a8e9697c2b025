"""Settling in physical time: Euler with dt = tau is the discrete map, Heun against a NumPy
Heun and its convergence order, the adaptive integrator, and settling times in seconds."""

import numpy as np
import pytest
from conftest import small_config

from crossbar_ep.config.build import build_network
from crossbar_ep.model.learners import one_hot
from crossbar_ep.api import settler
from crossbar_ep.model.settle import settle_reference
from crossbar_ep.runs import train


@pytest.fixture
def net_x():
    cfg = small_config(model={"hidden": [10, 9, 8], "beta_i": 0.3})
    rng = np.random.default_rng(5)
    net = build_network(cfg, 20, 4, rng)
    for name in net.W:   # strong coupling: visible transients
        net.W[name] *= 2.5
    return net, rng.random((7, 20)), one_hot(rng.integers(0, 4, 7), 4, np.float64)


def numpy_heun(net, x, length, r, s_init=None, y=None, frozen_p=None):
    """Independent Heun integration with the discrete map as the right-hand side."""
    L = net.L
    s = s_init or [x] + [np.zeros((x.shape[0], n)) for n in net.sizes[1:L + 1]]

    def f(state):
        return settle_reference(net, x, 1, s_init=state, y=y, frozen_p=frozen_p)

    for _ in range(int(round(length / r))):
        f1 = f(s)
        sp = [x] + [s[k] + r * (f1[k] - s[k]) for k in range(1, L + 1)]
        f2 = f(sp)
        s = [x] + [s[k] + 0.5 * r * ((f1[k] - s[k]) + (f2[k] - sp[k])) for k in range(1, L + 1)]
    return s


def test_euler_with_dt_tau_is_the_discrete_map_step_for_step(net_x):
    net, x, y = net_x
    disc = settler(net, 9, 5)
    ode = settler(net, 9, 5, mode="ode", method="euler", dt_over_tau=1.0)
    for T in range(1, 10):
        disc.T = ode.T = T
        a, b = disc.free(x), ode.free(x)
        assert a.steps == b.steps == T and b.time_tau == T
        for k in range(1, net.L + 1):
            np.testing.assert_array_equal(a.s[k], b.s[k])
    na, nb = disc.nudged(a, y), ode.nudged(b, y)
    for k in range(1, net.L + 1):
        np.testing.assert_array_equal(na.s[k], nb.s[k])


def test_heun_matches_numpy_heun(net_x):
    net, x, y = net_x
    st = settler(net, 3, 2, mode="ode", method="heun", dt_over_tau=0.5, nudge_error="frozen")
    free = st.free(x)
    assert free.steps == 6 and free.time_tau == pytest.approx(3.0)
    ref = numpy_heun(net, x, 3, 0.5)
    for k in range(1, net.L + 1):
        np.testing.assert_allclose(free.s[k], ref[k], atol=1e-12)
    nud = st.nudged(free, y)
    ref_b = numpy_heun(net, x, 2, 0.5, s_init=ref, y=y, frozen_p=free.p)
    for k in range(1, net.L + 1):
        np.testing.assert_allclose(nud.s[k], ref_b[k], atol=1e-12)


def test_heun_is_second_order_and_euler_first(net_x):
    net, x, _ = net_x
    fine = settler(net, 2, 1, mode="ode", method="heun", dt_over_tau=1 / 512).free(x).s

    def err(method, r):
        s = settler(net, 2, 1, mode="ode", method=method, dt_over_tau=r).free(x).s
        return max(np.abs(s[k] - fine[k]).max() for k in range(1, net.L + 1))

    heun = [err("heun", r) for r in (0.25, 0.125, 0.0625)]
    euler = [err("euler", r) for r in (0.25, 0.125, 0.0625)]
    for e in (heun, euler):
        assert e[0] > e[1] > e[2]
    assert 3.0 < heun[1] / heun[2] < 5.0            # halving dt: error / 4
    assert 1.6 < euler[1] / euler[2] < 2.5          # error / 2


@pytest.mark.parametrize("method, r", [("euler", 0.1), ("heun", 0.5), ("adaptive", 0.25)])
def test_smaller_steps_reach_the_discrete_fixed_point(net_x, method, r):
    net, x, _ = net_x
    for name in net.W:   # back to the initial coupling: one fixed point (no multistability)
        net.W[name] /= 2.5
    fixed = settle_reference(net, x, 400)
    out = settler(net, 200, 1, mode="ode", method=method, dt_over_tau=r, atol=1e-6).free(x)
    for k in range(1, net.L + 1):
        np.testing.assert_allclose(out.s[k], fixed[k], atol=1e-6)


def test_adaptive_controls_the_error_and_stops_on_the_residual(net_x):
    net, x, _ = net_x
    fine = settler(net, 3, 1, mode="ode", method="heun", dt_over_tau=1 / 512).free(x).s
    ad = settler(net, 3, 1, mode="ode", method="adaptive", dt_over_tau=0.5, atol=1e-5)
    out = ad.free(x)
    assert out.time_tau == pytest.approx(3.0)
    assert max(np.abs(out.s[k] - fine[k]).max() for k in range(1, net.L + 1)) < 1e-3
    loose = settler(net, 3, 1, mode="ode", method="adaptive", dt_over_tau=0.5, atol=1e-2)
    assert loose.free(x).steps < out.steps
    es = settler(net, 100, 1, mode="ode", method="adaptive", dt_over_tau=0.5, atol=1e-6,
                 early_stop=True, tolerance=1e-7)
    conv = es.free(x)
    assert conv.residual < 1e-7 and 1.0 < conv.time_tau < 100.0


def test_training_reports_settling_time_in_seconds(tmp_path):
    cfg = small_config(settling={"mode": "ode", "method": "adaptive", "dt_over_tau": 0.5,
                                 "early_stop": True, "tolerance": 1e-4, "tau_s": 2e-8},
                       training={"T": 40, "K": 20, "epochs": 1},
                       traces={"enabled": True})
    run = train.start(cfg, str(tmp_path / "r"))
    train.fit(run, progress=False)
    row = run.history[-1]
    assert 0 < row["settle_time_free_s"] < 40 * 2e-8
    assert 0 < row["settle_time_nudged_s"] < 20 * 2e-8
    from crossbar_ep.io.traces import open_run
    with open_run(str(tmp_path / "r")) as tr:      # per batch, in the trace file
        s = tr.settle(1)
        assert np.mean(s["free_time_s"]) == pytest.approx(row["settle_time_free_s"], rel=1e-5)
        assert tr.metrics["settle_time_nudged_s"][0] == pytest.approx(
            row["settle_time_nudged_s"])

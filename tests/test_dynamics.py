"""The settle engine and the Numba kernels against plain NumPy references."""

import numpy as np
import pytest
from conftest import small_config

from crossbar_ep.config.build import build_network
from crossbar_ep.model import kernels
from crossbar_ep.model.learners import one_hot
from crossbar_ep.api import settler
from crossbar_ep.model.settle import settle_reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_numpy(dtype):
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((37, 53)).astype(dtype) for _ in range(2))
    assert kernels.max_abs_diff(a, b) == pytest.approx(kernels.max_abs_diff_ref(a, b), rel=1e-6)
    s1, s2, f = a.copy(), a.copy(), b
    r1 = kernels.ode_step(s1, f, 0.3)
    r2 = kernels.ode_step_ref(s2, f, 0.3)
    assert r1 == pytest.approx(r2, rel=1e-6)
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-6)
    # optimisers over several steps (big enough to use several parallel chunks)
    w = rng.standard_normal((130, 70)).astype(dtype)
    ws = [w.copy(), w.copy()]
    ms = [np.zeros_like(w) for _ in range(2)]
    vs = [np.zeros_like(w) for _ in range(2)]
    bufs = [np.zeros_like(w) for _ in range(2)]
    for _ in range(4):
        g = rng.standard_normal(w.shape).astype(dtype)
        kernels.adam_step(ws[0], g, ms[0], vs[0], 0.5, 1e-2, 0.9, 0.999, 1e-8)
        kernels.adam_step_ref(ws[1], g, ms[1], vs[1], 0.5, 1e-2, 0.9, 0.999, 1e-8)
        kernels.sgd_step(ws[0], g, bufs[0], 0.5, 1e-2, 0.9)
        kernels.sgd_step_ref(ws[1], g, bufs[1], 0.5, 1e-2, 0.9)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ws[0], ws[1], rtol=tol, atol=tol)
    np.testing.assert_allclose(vs[0], vs[1], rtol=tol, atol=tol)


CASES = {
    "layered": {},
    "random-feedback": {"model": {"feedback": "random"}},
    "residual-pairs": {"model": {"hidden": [10, 9, 8, 7], "residual": {"kind": "pairs",
                                                                       "pairs": [[1, 3], [2, 4]]}}},
    "every-3": {"model": {"hidden": [6, 7, 8, 9, 5], "residual": "every-3", "beta_i": 0.2}},
    "agt": {"model": {"hidden": [6, 7, 8, 9, 5], "residual": {"kind": "agt", "p": 0.6},
                      "feedback": "random"}},
    "bias-hardsigmoid": {"model": {"bias": True, "activation": "hard_sigmoid", "alpha": 0.7,
                                   "beta_i": [0.3, 0.2]}},
    "one-layer": {"model": {"hidden": [12]}},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("frozen", [False, True])
def test_settler_matches_reference(case, frozen):
    over = CASES[case]
    cfg = small_config(**over, training={"T": 12, "K": 7})
    rng = np.random.default_rng(5)
    net = build_network(cfg, 20, 4, rng)
    for k in net.b:
        net.b[k][:] = rng.standard_normal(net.b[k].shape) * 0.3
    for name in net.W:  # strong weights so the layers interact visibly
        net.W[name] *= 3.0
    st = settler(net, 12, 7, nudge_error="frozen" if frozen else "recomputed")
    x = rng.random((9, 20))
    y = one_hot(rng.integers(0, 4, 9), 4, np.float64)
    free = st.free(x)
    ref = settle_reference(net, x, 12)
    for k in range(1, net.L + 1):
        np.testing.assert_allclose(free.s[k], ref[k], atol=1e-12)
    nud = st.nudged(free, y)
    ref_b = settle_reference(net, x, 7, s_init=ref, y=y, frozen_p=free.p if frozen else None)
    for k in range(1, net.L + 1):
        np.testing.assert_allclose(nud.s[k], ref_b[k], atol=1e-12)
    assert max(np.abs(nud.s[k] - free.s[k]).max() for k in range(1, net.L + 1)) > 1e-6


def test_ode_mode_and_early_stop():
    cfg = small_config(model={"beta_i": 0.05})
    net = build_network(cfg, 20, 4, np.random.default_rng(0))
    x = np.random.default_rng(1).random((5, 20))
    ode = settler(net, 6, 6, mode="ode", dt_over_tau=0.25)
    free = ode.free(x)
    assert free.steps == 24  # T / (dt/tau)
    ref = settle_reference(net, x, 24, r=0.25)
    np.testing.assert_allclose(free.s[2], ref[2], atol=1e-12)
    # early stop: converged states agree with a long run, using fewer steps
    es = settler(net, 200, 10, early_stop=True, tolerance=1e-9)
    out = es.free(x)
    assert out.steps < 200 and out.residual < 1e-9
    long = settle_reference(net, x, 200)
    np.testing.assert_allclose(out.s[2], long[2], atol=1e-8)
    capped = settler(net, 200, 10, max_steps=7).free(x)
    assert capped.steps == 7


def test_residual_shrinks_with_more_steps():
    cfg = small_config()
    net = build_network(cfg, 20, 4, np.random.default_rng(0))
    x = np.random.default_rng(1).random((5, 20))
    r = [settler(net, T, 2).free(x).residual for T in (3, 6, 12)]
    assert r[0] > r[1] > r[2]


def test_float32_tanh_kernel_within_one_ulp_and_fused_add():
    """The rational float32 tanh against float64 NumPy tanh (the exact value rounded): at most
    one float32 ulp over [-10, 10] and near 0; NaN and inf propagate; the fused drive / bias
    add and hard_sigmoid equal their NumPy references."""
    from crossbar_ep.model.activations import activate
    x = np.concatenate([np.linspace(-10, 10, 400_001),
                        np.geomspace(1e-30, 2.0, 20_000)]).astype(np.float32)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    ours = activate(x.reshape(1, -1).copy(), "tanh").ravel()
    assert np.max(np.abs(ours - exact) / ulp) <= 1.0
    assert np.all(np.sign(ours) == np.sign(x)) and np.all(np.abs(ours) <= 1.0)
    odd = activate(np.array([[np.nan, np.inf, -np.inf, 0.0]], np.float32), "tanh")
    assert np.isnan(odd[0, 0]) and odd[0, 1] == 1.0 and odd[0, 2] == -1.0 and odd[0, 3] == 0.0
    rng = np.random.default_rng(0)
    h = rng.normal(0, 2, (37, 29)).astype(np.float32)
    for add in (None, rng.normal(size=(37, 29)).astype(np.float32),
                rng.normal(size=29).astype(np.float32)):
        hh = h if add is None else h + add
        got = activate(h.copy(), "tanh", add)
        np.testing.assert_allclose(got, np.tanh(hh.astype(np.float64)), rtol=1.2e-7, atol=1e-30)
        np.testing.assert_array_equal(activate(h.copy(), "hard_sigmoid", add),
                                      np.clip(hh, 0, 1))
        h64 = h.astype(np.float64)   # float64 states keep NumPy's tanh
        np.testing.assert_array_equal(
            activate(h64.copy(), "tanh", None if add is None else add.astype(np.float64)),
            np.tanh(h64 if add is None else h64 + add))


@pytest.mark.parametrize("width", [29, 64, 600])
def test_activation_writes_every_copy(width):
    """rho(h + add) with copies: each copy (column blocks of wider buffers, a transposed view,
    a plain array) receives exactly the activated rows, for widths that do and do not fill
    the kernel's row blocks; nothing outside the copied blocks is touched."""
    from crossbar_ep.model.activations import activate
    rng = np.random.default_rng(1)
    h = rng.normal(0, 2, (77, width)).astype(np.float32)
    add = rng.normal(size=width).astype(np.float32)
    wide = np.full((77, 3 * width), 7.0, np.float32)
    tall = np.full((width, 77), 7.0, np.float32)
    plain = np.zeros((77, width), np.float32)
    copies = (wide[:, width:2 * width], tall.T, plain)
    want = activate((h + add).copy(), "tanh")
    got = activate(h.copy(), "tanh", add, copies)
    np.testing.assert_array_equal(got, want)
    for c in copies:
        np.testing.assert_array_equal(c, want)
    assert np.all(wide[:, :width] == 7.0) and np.all(wide[:, 2 * width:] == 7.0)

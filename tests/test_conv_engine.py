"""One settle engine for dense and conv nets: every settling and EP option on a conv net,
checked against a plain NumPy conv FRE-RNN written here from the definitions (direct loops
for the convolutions, 2 x 2 pooling with switches, unpooled feedback and nudges), and EP
against the BP twin with early stopping and centered nudging."""

import dataclasses

import numpy as np
import pytest

from crossbar_ep.api import settler
from crossbar_ep.model.activations import softmax
from crossbar_ep.model.conv import make_conv_network, pool2, unpool2
from crossbar_ep.model.learners import BPLearner, EPLearner, one_hot
from crossbar_ep.model.options import TrainingConfig

from test_conv import conv_loop, convT_loop


def rho(h, kind):
    return np.tanh(h) if kind == "tanh" else np.clip(h, 0.0, 1.0)


def ref_map(net, x, s, err=None):
    """f(s) of the conv FRE-RNN from its definitions: s = [s_1, ..., s_L] maps (B, H, W, C);
    err: the output error y - p (B, n_out) of a nudged step, or None."""
    B = x.shape[0]
    L = len(net.convs)
    geo = [c.g for c in net.convs]
    kern = {n: op.dense() for n, op in net.ops.items()}
    X = x.reshape(B, *net.in_shape).transpose(0, 2, 3, 1)
    pools = [pool2(a) for a in s]
    out = []
    for k in range(1, L + 1):
        g = geo[k - 1]
        src = X if k == 1 else pools[k - 2][0]
        Wk = kern[f"C{k}"].reshape(g.c_out, g.k, g.k, g.c_in)
        h = conv_loop(src, Wk, g.pad) + net.b[k]
        if k < L:
            f = next(f for f in net.feedbacks if f.dst == k)
            gu = geo[k]
            Bk = kern[f.tied or f.name].reshape(gu.c_out, gu.k, gu.k, gu.c_in)
            fb = convT_loop(s[k], Bk, gu.h_in, gu.w_in, gu.pad)
            h = h + f.scale * unpool2(fb, pools[k - 1][1], g.h_out, g.w_out)
        elif err is not None:
            A = kern["Wf" if net.nudge_tied else "Bf"]
            n = (net.beta_f * err @ A).reshape(pools[k - 1][0].shape)
            h = h + unpool2(n, pools[k - 1][1], g.h_out, g.w_out)
        out.append(rho(h, net.activation))
    return out


def ref_probs(net, s):
    pL = pool2(s[-1])[0].reshape(s[-1].shape[0], -1)
    return softmax(pL @ net.ops["Wf"].dense().T + net.b[len(s) + 1])


def ref_start(net, B):
    g1 = net.convs[0].g
    h = np.broadcast_to(net.b[1], (1, g1.h_out, g1.w_out, g1.c_out)).astype(float)
    out = [rho(h, net.activation)]
    for k in range(2, len(net.convs) + 1):
        g = net.convs[k - 1].g
        Wk = net.ops[f"C{k}"].dense().reshape(g.c_out, g.k, g.k, g.c_in)
        out.append(rho(conv_loop(pool2(out[-1])[0], Wk, g.pad) + net.b[k], net.activation))
    return [np.repeat(a, B, axis=0) for a in out]


def tiny(activation="hard_sigmoid", feedback="symmetric", beta_i=0.2, beta_f=0.3, seed=1):
    net = make_conv_network((1, 8, 8), (3, 4), 5, seed, kernel=3, padding=1, beta_i=beta_i,
                            beta_f=beta_f, dtype="float64", activation=activation,
                            feedback=feedback)
    for k in (1, 2):          # most units inside the hard-sigmoid's linear range
        net.b[k][:] = 0.45
    return net


def flat(maps):
    return [a.reshape(a.shape[0], -1) for a in maps]


@pytest.mark.parametrize("activation", ["hard_sigmoid", "tanh"])
@pytest.mark.parametrize("feedback", ["symmetric", "random"])
@pytest.mark.parametrize("nudge_error", ["recomputed", "frozen", "cumulative"])
def test_phases_match_the_numpy_conv_net(activation, feedback, nudge_error):
    net = tiny(activation, feedback)
    rng = np.random.default_rng(0)
    x = rng.random((3, 64))
    y = one_hot(np.array([0, 3, 4]), 5, np.float64)
    st = settler(net, 6, 5, nudge_error=nudge_error)
    free = st.free(x)
    s = ref_start(net, 3)
    for _ in range(6):
        s = ref_map(net, x, s)
    for a, b in zip(free.s[1:], flat(s)):
        np.testing.assert_allclose(a, b, atol=1e-11)
    np.testing.assert_allclose(free.p, ref_probs(net, s), atol=1e-12)
    nudged = st.nudged(free, y)
    e0 = y - ref_probs(net, s)
    for t in range(5):
        err = {"recomputed": y - ref_probs(net, s), "frozen": e0,
               "cumulative": (t + 1) * e0}[nudge_error]
        s = ref_map(net, x, s, err)
    for a, b in zip(nudged.s[1:], flat(s)):
        np.testing.assert_allclose(a, b, atol=1e-11)
    if feedback == "random":
        assert "B1" in net.ops and not net.ops["B1"].trainable and "Bf" in net.ops


def test_ode_modes_on_conv_nets():
    """Euler at dt = tau is the discrete map; Heun with small steps tends to the same ODE
    solution as fine Euler; adaptive stays within its tolerance of it."""
    net = tiny()
    x = np.random.default_rng(2).random((2, 64))
    disc = settler(net, 6, 3).free(x)
    euler = settler(net, 6, 3, mode="ode", method="euler", dt_over_tau=1.0).free(x)
    for a, b in zip(disc.s[1:], euler.s[1:]):
        np.testing.assert_array_equal(a, b)
    fine = settler(net, 3, 1, mode="ode", dt_over_tau=1 / 256).free(x)
    heun = settler(net, 3, 1, mode="ode", method="heun", dt_over_tau=1 / 16).free(x)
    adapt = settler(net, 3, 1, mode="ode", method="adaptive", dt_over_tau=0.25,
                    atol=1e-6).free(x)
    for a, b, c in zip(fine.s[1:], heun.s[1:], adapt.s[1:]):
        np.testing.assert_allclose(b, a, atol=5e-3)
        np.testing.assert_allclose(c, a, atol=5e-3)
    assert heun.time_tau == pytest.approx(3.0) and adapt.time_tau == pytest.approx(3.0)


def test_early_stop_on_conv_nets_ends_at_the_fixed_point():
    """Where the free phase has a fixed point, early stopping ends there.  (Max-pooling
    makes the map discontinuous: some inputs have none, and the phase then runs T steps
    with a residual that stays put where a switch chatters.)"""
    net = tiny(beta_i=0.05, seed=3)
    x = np.random.default_rng(3).random((2, 64))
    long = settler(net, 400, 10).free(x)
    es = settler(net, 400, 10, early_stop=True, tolerance=1e-9).free(x)
    assert es.steps < 100 and es.residual < 1e-9
    for a, b in zip(es.s[1:], long.s[1:]):
        np.testing.assert_allclose(a, b, atol=1e-8)


def cosine(a, b):
    return float(np.vdot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("activation", ["hard_sigmoid", "tanh"])
def test_ep_matches_bp_on_a_conv_net_with_early_stop_and_centered_nudging(activation):
    """Normalised, centered EP with early-stopped phases against the BP twin's minus
    gradients: cosine > 0.99 and norms within 10 % for every kernel, bias and the readout.
    With tanh (smooth), centering removes the O(beta_f) bias of the one-sided estimate: its
    error is at most half the one-sided one; the hard-sigmoid's kinks, not beta_f, set its
    residual error."""
    net = make_conv_network((1, 8, 8), (4, 6), 5, 4, kernel=3, padding=1, beta_i=1e-3,
                            beta_f=0.01, dtype="float64", activation=activation)
    for k in (1, 2):
        net.b[k][:] = 0.5 if activation == "hard_sigmoid" else 0.0
    rng = np.random.default_rng(5)
    x = 0.6 * rng.random((6, 64))
    y1h = one_hot(np.arange(6) % 5, 5, np.float64)
    gr, _ = BPLearner(net, None).gradients(x, y1h)
    err = {}
    for nudging in ("one_sided", "centered"):
        st = settler(net, 200, 200, early_stop=True, tolerance=1e-10)
        ep = EPLearner(net, st, None, norm=dict(net.norm),
                       training=TrainingConfig(nudging=nudging))
        up, free = ep.updates(x, y1h)
        assert free.steps < 50 and ep.last_nudged.steps < 50
        err[nudging] = {n: np.linalg.norm(up[n] - gr[n]) / np.linalg.norm(gr[n])
                        for n in ("C1", "b1", "b2")}
        if nudging == "centered":
            for name in ("C1", "C2", "Wf", "b1", "b2", "b3"):
                assert cosine(up[name], gr[name]) > 0.99, name
                ratio = np.linalg.norm(up[name]) / np.linalg.norm(gr[name])
                assert 0.9 < ratio < 1.1, (name, ratio)
    if activation == "tanh":
        for n in ("C1", "b1", "b2"):
            assert err["centered"][n] < 0.5 * err["one_sided"][n], (n, err)


def test_gradient_clipping_on_dense_and_conv_learners():
    """training.grad_clip_norm: the batch's digital updates (weights and biases) scaled to
    the global norm, for EP and BP, dense and conv alike."""
    from crossbar_ep.model.network import make_network
    from crossbar_ep.model.optim import SGD
    rng = np.random.default_rng(0)
    for make, n_in in ((lambda: make_network((16, 8, 6, 3), 0, dtype="float64", bias=True),
                        16),
                       (lambda: make_conv_network((1, 8, 8), (3, 4), 3, 0, kernel=3,
                                                  padding=1, dtype="float64"), 64)):
        x, y = rng.random((5, n_in)), np.arange(5) % 3
        y1h = one_hot(y, 3, np.float64)
        for algo in ("ep", "bp"):
            net = make()
            before = {k: v.copy() for k, v in net.trainable()}
            training = TrainingConfig(grad_clip_norm=1e-3)
            if algo == "ep":
                lrn = EPLearner(net, settler(net, 8, 4), None)
                up = lrn.updates(x, y1h)[0]
                lrn = EPLearner(net, settler(net, 8, 4),
                                SGD(net.trainable(), {k: 1.0 for k in net.lr}),
                                training=training)
            else:
                up = BPLearner(net, None).gradients(x, y1h)[0]
                lrn = BPLearner(net, SGD(net.trainable(), {k: 1.0 for k in net.lr}),
                                training=training)
            total = np.sqrt(sum(float(np.vdot(g, g)) for g in up.values()))
            assert total > 1e-3
            lrn.train_batch(x, y)
            moved = {k: v - before[k] for k, v in net.trainable()}
            norm = np.sqrt(sum(float(np.vdot(d, d)) for d in moved.values()))
            assert norm == pytest.approx(1e-3, rel=1e-4), (algo, norm)
            for k, d in moved.items():
                np.testing.assert_allclose(d, up[k] * (1e-3 / (total + 1e-6)), atol=1e-12)


def test_config_runs_conv_nets_with_every_option(tmp_path):
    """A conv experiment with ODE Heun settling, early stop, centered nudging, phase
    averaging, frozen nudge error, nudged readout error, tanh and random feedback validates,
    trains and resumes exactly."""
    from crossbar_ep.runs import train
    from test_conv import conv_cfg

    def cfg(epochs):
        c = conv_cfg(epochs=epochs, nudging="centered", nudge_error="frozen",
                     readout_error="nudged", grad_clip_norm=5.0)
        return dataclasses.replace(
            c, model=dataclasses.replace(c.model, activation="tanh", feedback="random"),
            settling=dataclasses.replace(c.settling, mode="ode", method="heun",
                                         dt_over_tau=0.5, early_stop=True, tolerance=1e-4))
    full = train.start(cfg(2), str(tmp_path / "full"))
    train.fit(full, progress=False)
    part = train.start(cfg(1), str(tmp_path / "part"))
    train.fit(part, progress=False)
    resumed = train.resume(str(tmp_path / "part"), epochs=2)
    train.fit(resumed, progress=False)
    for name in ("C1", "C2", "Wf"):
        np.testing.assert_array_equal(full.net.W[name], resumed.net.W[name])
    assert np.isfinite(full.history[-1]["test_loss"])

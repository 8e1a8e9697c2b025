"""Convolutional FRE-RNN: im2col / col2im / convT against direct loops, adjointness,
pooling with switches and its tie rule, EP against its BP twin, runs and resume."""

import numpy as np
import pytest

from crossbar_ep.model.conv import (
    ConvGeom,
    ConvOperator,
    col2im,
    im2col,
    make_conv_network,
    pool2,
    unpool2,
)
from crossbar_ep.api import settler
from crossbar_ep.model.learners import BPLearner, EPLearner
from crossbar_ep.model.learners import one_hot
from crossbar_ep.model.operators import DigitalMatrix
from crossbar_ep.model.options import TrainingConfig


def conv_loop(x, Wk, pad):
    """Direct conv: x (B, H, W, Ci), Wk (Co, k, k, Ci) -> (B, Ho, Wo, Co)."""
    B, H, W, Ci = x.shape
    Co, k = Wk.shape[0], Wk.shape[1]
    xp = np.zeros((B, H + 2 * pad, W + 2 * pad, Ci))
    xp[:, pad:pad + H, pad:pad + W] = x
    Ho, Wo = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    out = np.zeros((B, Ho, Wo, Co))
    for b in range(B):
        for oy in range(Ho):
            for ox in range(Wo):
                for o in range(Co):
                    out[b, oy, ox, o] = np.sum(xp[b, oy:oy + k, ox:ox + k] * Wk[o])
    return out


def convT_loop(y, Wk, H, W, pad):
    """Direct transposed conv (scatter): y (B, Ho, Wo, Co) -> (B, H, W, Ci)."""
    B, Ho, Wo, Co = y.shape
    k, Ci = Wk.shape[1], Wk.shape[3]
    out = np.zeros((B, H + 2 * pad, W + 2 * pad, Ci))
    for b in range(B):
        for oy in range(Ho):
            for ox in range(Wo):
                for o in range(Co):
                    out[b, oy:oy + k, ox:ox + k] += y[b, oy, ox, o] * Wk[o]
    return out[:, pad:pad + H, pad:pad + W]


@pytest.mark.parametrize("pad,k", [(0, 3), (1, 3), (2, 5)])
def test_conv_and_convT_match_loops_and_are_adjoint(pad, k):
    rng = np.random.default_rng(0)
    B, H, W, Ci, Co = 2, 7, 6, 3, 4
    g = ConvGeom(Ci, H, W, Co, k, pad)
    Wk = rng.standard_normal((Co, k, k, Ci))
    op = ConvOperator(g, DigitalMatrix(Wk.reshape(Co, -1)))
    x = rng.standard_normal((B, H, W, Ci))
    y = rng.standard_normal((B, g.h_out, g.w_out, Co))
    np.testing.assert_allclose(op.conv(x), conv_loop(x, Wk, pad), atol=1e-12)
    np.testing.assert_allclose(op.conv_t(y), convT_loop(y, Wk, H, W, pad), atol=1e-12)
    assert np.vdot(op.conv(x), y) == pytest.approx(np.vdot(x, op.conv_t(y)), rel=1e-12)
    # im2col / col2im adjoint: <im2col(x), c> = <x, col2im(c)>
    c = rng.standard_normal((B * g.positions, g.patch))
    assert np.vdot(im2col(x, k, pad), c) == pytest.approx(
        np.vdot(x, col2im(c, B, H, W, Ci, k, pad)), rel=1e-12)
    # the flat operator protocol: read / transposed read
    out = op.read(x.reshape(B, -1))
    np.testing.assert_allclose(out, conv_loop(x, Wk, pad).reshape(B, -1), atol=1e-12)
    back = op.read_transposed(y.reshape(B, -1))
    np.testing.assert_allclose(back, convT_loop(y, Wk, H, W, pad).reshape(B, -1), atol=1e-12)


def test_chunked_patch_matrices_give_the_same_maps(monkeypatch):
    """conv and conv_t build, read and fold the patch matrix a few images at a time
    (CHUNK_BYTES); any chunk size gives the loops' result, an uneven last chunk included."""
    import crossbar_ep.model.conv as conv_mod
    rng = np.random.default_rng(1)
    B, H, W, Ci, Co, k = 7, 6, 6, 2, 3, 3
    g = ConvGeom(Ci, H, W, Co, k, 1)
    Wk = rng.standard_normal((Co, k, k, Ci))
    x = rng.standard_normal((B, H, W, Ci))
    y = rng.standard_normal((B, g.h_out, g.w_out, Co))
    per_image = g.positions * g.patch * 8
    for images in (1, 3, 7, 100):
        monkeypatch.setattr(conv_mod, "CHUNK_BYTES", images * per_image)
        op = ConvOperator(g, DigitalMatrix(Wk.reshape(Co, -1)))
        assert op._chunks(B)[0] == min(images, B)
        np.testing.assert_allclose(op.conv(x), conv_loop(x, Wk, 1), atol=1e-12)
        np.testing.assert_allclose(op.conv_t(y), convT_loop(y, Wk, H, W, 1), atol=1e-12)


def test_pool_switches_unpool_and_first_maximum_tie_rule():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((2, 6, 5, 3))      # odd width: last column dropped
    p, idx = pool2(s)
    assert p.shape == (2, 3, 2, 3)
    for b in range(2):
        for i in range(3):
            for j in range(2):
                for c in range(3):
                    win = s[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c].reshape(-1)
                    assert p[b, i, j, c] == win.max()
                    assert idx[b, i, j, c] == int(np.argmax(win))   # numpy: first maximum
    # ties (hard-sigmoid maps sit at 0 or 1): the first maximum in row-major order wins
    t = np.array([[0, 1], [1, 1]], float).reshape(1, 2, 2, 1)
    assert pool2(t)[1].item() == 1
    t = np.ones((1, 2, 2, 1))
    assert pool2(t)[1].item() == 0
    t = np.array([[0, 0], [1, 1]], float).reshape(1, 2, 2, 1)
    assert pool2(t)[1].item() == 2
    # unpool is the adjoint of pooling with fixed switches
    g = rng.standard_normal(p.shape)
    u = unpool2(g, idx, 6, 5)
    assert np.count_nonzero(u) == g.size
    sel = np.zeros_like(s)
    np.copyto(sel, u)
    assert np.vdot(u, s) == pytest.approx(np.vdot(g, p))


def tiny_net(seed=0, beta_i=1e-3, beta_f=1e-3, dtype="float64"):
    return make_conv_network((1, 8, 8), (4, 6), 5, seed, kernel=3, padding=1,
                             beta_i=beta_i, beta_f=beta_f, dtype=dtype)


def test_feedforward_start_and_free_phase_tend_to_bp_forward():
    net = tiny_net()
    rng = np.random.default_rng(2)
    x = rng.random((3, 64))
    st = settler(net, 30, 10)
    p_ep = st.free(x).p
    p_bp = BPLearner(net, None).predict(x)
    np.testing.assert_allclose(p_ep, p_bp, atol=5e-4)
    # with beta_i = 0 the free phase is exactly the feed-forward net
    net0 = tiny_net(beta_i=0.0)
    np.testing.assert_allclose(settler(net0, 4, 1).free(x).p,
                               BPLearner(net0, None).predict(x), atol=1e-12)


def cosine(a, b):
    return float(np.vdot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_ep_updates_align_with_bp_gradients():
    """Normalised EP updates (divided by beta_f beta_i^hops) against the BP twin's minus
    gradients: cosine > 0.99 per parameter.  Inputs: scaled so pre-activations sit inside
    (0, 1) for most units, and float64."""
    net = tiny_net(seed=4, beta_i=1e-3, beta_f=1e-3)
    for k in (1, 2):                         # biases near the middle of the clip window
        net.b[k][:] = 0.5
    rng = np.random.default_rng(5)
    x = 0.6 * rng.random((6, 64))
    y1h = one_hot(np.arange(6) % 5, 5, np.float64)
    ep = EPLearner(net, settler(net, 40, 40), None, norm=dict(net.norm))
    up, _ = ep.updates(x, y1h)
    gr, _ = BPLearner(net, None).gradients(x, y1h)
    for name in ("C1", "C2", "Wf", "b1", "b2", "b3"):
        c = cosine(up[name], gr[name])
        assert c > 0.99, (name, c)
        ratio = np.linalg.norm(up[name]) / np.linalg.norm(gr[name])
        assert 0.9 < ratio < 1.1, (name, ratio)


def test_numba_kernels_match_numpy_references():
    from crossbar_ep.model.conv import col2im_ref, im2col_ref
    from crossbar_ep.model.conv_kernels import pool, unpool_add_nb
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 7, 6, 5))
    for k, pad in ((3, 1), (2, 0)):
        np.testing.assert_array_equal(im2col(x, k, pad), im2col_ref(x, k, pad))
        c = rng.standard_normal(im2col(x, k, pad).shape)
        np.testing.assert_allclose(col2im(c, 3, 7, 6, 5, k, pad),
                                   col2im_ref(c, 3, 7, 6, 5, k, pad), atol=1e-12)
    x = np.round(rng.standard_normal((2, 6, 6, 3)) * 2) / 2     # many ties after the clip
    m, idx = pool(np.clip(x, 0, 1))
    m_ref, idx_ref = pool2(np.clip(x, 0, 1))
    np.testing.assert_array_equal(m, m_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    g = rng.standard_normal(m.shape)
    h = rng.standard_normal(x.shape)
    want = h + 0.3 * unpool2(g, idx, 6, 6)
    np.testing.assert_allclose(unpool_add_nb(h.copy(), g, idx, 0.3), want, atol=1e-12)


def test_fused_unpool_clip_pool_kernel_matches_numpy():
    """One pass of clip(base + gain * unpool(g)) and its 2 x 2 pooling against the same
    written with NumPy loops, out of place and in place."""
    from crossbar_ep.model.conv_kernels import unpool_add_clip_pool_nb
    rng = np.random.default_rng(4)
    B, H, W, C = 3, 6, 8, 5
    base = (np.round(rng.standard_normal((B, H, W, C)) * 2) / 4).astype(np.float32)
    g = rng.standard_normal((B, H // 2, W // 2, C)).astype(np.float32)
    idx = rng.integers(0, 4, g.shape).astype(np.uint8)
    want = base.copy()
    for b, i, j, c in np.ndindex(*g.shape):
        dy, dx = divmod(int(idx[b, i, j, c]), 2)
        y, x = 2 * i + dy, 2 * j + dx         # the sum in double, rounded once
        want[b, y, x, c] = np.float32(float(want[b, y, x, c]) + 0.3 * float(g[b, i, j, c]))
    want = np.clip(want, 0, 1)
    m_want = np.empty(g.shape, np.float32)
    i_want = np.empty(g.shape, np.uint8)
    for b, i, j, c in np.ndindex(*g.shape):
        win = [want[b, 2 * i + dy, 2 * j + dx, c] for dy in (0, 1) for dx in (0, 1)]
        i_want[b, i, j, c] = int(np.argmax(win))         # first maximum
        m_want[b, i, j, c] = max(win)
    for in_place in (False, True):
        out = base.copy() if in_place else np.full_like(base, np.nan)
        m, i2 = np.empty_like(g), np.empty(g.shape, np.uint8)
        unpool_add_clip_pool_nb(out, out if in_place else base, g, idx, 0.3, m, i2)
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(m, m_want)
        np.testing.assert_array_equal(i2, i_want)


def conv_cfg(**training):
    from tests.conftest import small_config
    return small_config(
        data={"synthetic_features": 64, "synthetic_classes": 4, "synthetic_train": 96,
              "synthetic_test": 40},
        model={"activation": "hard_sigmoid", "beta_i": 0.05,
               "conv": {"channels": [4, 6], "kernel": 3, "padding": 1,
                        "input_shape": [1, 8, 8]}},
        training={"batch_size": 32, "T": 6, "K": 4, "beta_f": 0.5, "lr": 0.01,
                  "weight_decay": 1e-4, **training})


@pytest.mark.parametrize("algorithm", ["ep", "bp"])
def test_conv_run_is_deterministic_and_resumes_exactly(tmp_path, algorithm):
    from crossbar_ep.runs import train
    cfg = conv_cfg(algorithm=algorithm, epochs=2)
    a = train.start(cfg, str(tmp_path / "a"))
    train.fit(a, progress=False)
    b = train.start(cfg, str(tmp_path / "b"))
    train.fit(b, progress=False)
    part = train.start(conv_cfg(algorithm=algorithm, epochs=1), str(tmp_path / "p"))
    train.fit(part, progress=False)
    del part
    resumed = train.resume(str(tmp_path / "p"), epochs=2)
    train.fit(resumed, progress=False)
    for name in ("C1", "C2", "Wf"):
        np.testing.assert_array_equal(a.net.W[name], b.net.W[name])
        np.testing.assert_array_equal(a.net.W[name], resumed.net.W[name])
    for k in a.net.b:
        np.testing.assert_array_equal(a.net.b[k], resumed.net.b[k])
    assert [r["test_acc"] for r in a.history] == [r["test_acc"] for r in resumed.history]
    assert isinstance(a.net.ops["C1"], DigitalMatrix) and a.net.W["C1"].shape == (4, 9)


def test_conv_config_errors():
    from crossbar_ep.errors import ConfigError
    from tests.conftest import small_config
    with pytest.raises(ConfigError, match="model.conv.input_shape"):
        small_config(model={"activation": "hard_sigmoid", "conv": {"channels": [4]}})
    with pytest.raises(ConfigError, match="model.residual.kind"):
        small_config(model={"conv": {"channels": [4], "kernel": 3, "padding": 1,
                                     "input_shape": [1, 4, 5]}, "residual": "every-3"},
                     data={"synthetic_features": 20})
    with pytest.raises(ConfigError, match="too small to pool"):
        small_config(model={"activation": "hard_sigmoid",
                            "conv": {"channels": [4, 4], "kernel": 3,
                                     "input_shape": [1, 4, 5]}},
                     data={"synthetic_features": 20})
    with pytest.raises(ConfigError, match="crossbar.layers"):
        small_config(model={"activation": "hard_sigmoid",
                            "conv": {"channels": [4], "kernel": 3, "padding": 1,
                                     "input_shape": [1, 4, 5]}},
                     data={"synthetic_features": 20},
                     crossbar={"enabled": True, "device": "device_models/ideal.yaml",
                               "layers": ["W0"]})


def test_adamw_decay_sgd_l2_and_cosine_schedule():
    from types import SimpleNamespace

    from crossbar_ep.config.build import lr_factor
    from crossbar_ep.model.optim import SGD, Adam
    w = np.ones(3)
    opt = Adam([("w", w)], {"w": 0.1})
    opt.weight_decay = 0.5
    opt.begin()
    opt.step("w", np.zeros(3))          # zero update: only the decoupled decay acts
    np.testing.assert_allclose(w, 1.0 - 0.1 * 0.5)
    w2 = np.ones(2)
    sgd = SGD([("w", w2)], {"w": 0.1})
    sgd.weight_decay = 0.5
    sgd.begin()
    sgd.step("w", np.full(2, 2.0))      # w + lr (u - wd w) = 1 + 0.1 (2 - 0.5)
    np.testing.assert_allclose(w2, 1.15)
    t = SimpleNamespace(lr_schedule="cosine", lr_min=1e-6, schedule_epochs=None, epochs=50)
    # PyTorch CosineAnnealingLR(T_max=50, eta_min=1e-6) stepped once per epoch
    for epoch in (1, 2, 26, 51):
        e = epoch - 1
        want = 1e-6 + (2.5e-4 - 1e-6) * (1 + np.cos(np.pi * min(e, 50) / 50)) / 2
        assert lr_factor(t, epoch, 2.5e-4) == pytest.approx(want)


def test_conv_run_records_traces_and_plots(tmp_path):
    """traces.enabled on a conv net: per-layer trajectories of the flattened maps (free and
    nudged), weights of the kernels, and the plot command's figures."""
    from dataclasses import replace

    from crossbar_ep.io.trace_reader import open_run
    from crossbar_ep.plots.traces import plot_run_dir
    from crossbar_ep.runs import train
    cfg = conv_cfg(epochs=1)
    cfg = replace(cfg, traces=replace(cfg.traces, enabled=True, samples=4, batches=(0,)))
    run = train.start(cfg, str(tmp_path))
    train.fit(run, progress=False)
    tr = open_run(str(tmp_path))
    free, nudged = tr.trajectories(1, 0, "free"), tr.trajectories(1, 0, "nudged")
    assert free[1].shape == (6 + 1, 4, 8 * 8 * 4) and free[2].shape == (7, 4, 4 * 4 * 6)
    assert nudged[2].shape == (4 + 1, 4, 96)
    np.testing.assert_array_equal(nudged[1][0], free[1][-1])    # nudged starts at the free end
    assert not np.array_equal(nudged[2][-1], free[2][-1])
    figs = plot_run_dir(str(tmp_path), str(tmp_path / "plots"))
    assert any(p.endswith("trajectories.png") for p in figs)
    assert any(p.endswith("layer_signals.png") for p in figs)
    import json
    row = json.load(open(tmp_path / "metrics.json"))[0]     # per-layer EP signal diagnostics
    assert row["ds_L1"] > 0 and row["ds_L2"] > row["ds_L1"] and row["dw_C1"] > 0


def test_conv_diagnostics_match_a_brute_force_jacobian():
    """Power iteration on finite-difference Jacobian-vector products against the eigenvalues
    of the Jacobian built column by column; the FTLE of a long free phase near log of the
    spectral radius where it ends."""
    from crossbar_ep.model.conv_diagnostics import diagnose_conv, spectral_radius
    net = make_conv_network((1, 8, 8), [2, 3], 4, rng=3, kernel=3, padding=1, beta_i=0.05,
                            beta_f=0.1, dtype="float64")
    for k in (1, 2):              # more units inside the hard-sigmoid's linear range
        net.b[k][:] = 0.45
        net.ops[f"C{k}"].W *= 3.0
        net.ops[f"C{k}"].changed()
    st = settler(net, 300, 10)
    x = np.random.default_rng(4).random((2, 64))
    free = st.free(x)
    xs = [a[:1] for a in free.s[1:]]
    st.start_state(x[:1])                 # reads the first sample's input drive
    F0 = st.step_map([x[:1]] + xs)[1:]
    flat0 = np.concatenate([a.ravel() for a in F0])
    sizes = [a.size for a in xs]
    J = np.empty((flat0.size, flat0.size))
    eps = 1e-6
    for i in range(flat0.size):
        v = np.zeros(flat0.size)
        v[i] = eps
        parts = np.split(v, np.cumsum(sizes)[:-1])
        F = st.step_map([x[:1]] + [a + p.reshape(a.shape) for a, p in zip(xs, parts)])[1:]
        J[:, i] = (np.concatenate([a.ravel() for a in F]) - flat0) / eps
    exact = np.abs(np.linalg.eigvals(J)).max()
    assert 0.1 < exact < 1.0
    assert spectral_radius(st, xs, x[:1], iters=200, eps=1e-6)[0] == pytest.approx(
        exact, rel=1e-3)
    rep = diagnose_conv(st, x, jac_samples=2)
    assert rep.steps == 300 and len(rep.layer_residual) == 2
    assert rep.spectral_radius.shape == (2,) and rep.spectral_radius[0] == pytest.approx(
        exact, rel=1e-2)
    assert rep.ftle[0] == pytest.approx(np.log(exact), abs=0.1)
    assert "contracting" in rep.text()


def test_diagnose_cli_on_a_conv_experiment(tmp_path, capsys):
    from crossbar_ep import cli
    from crossbar_ep.config.experiment import dump_config
    path = str(tmp_path / "conv.yaml")
    dump_config(conv_cfg(), path)
    assert cli.main(["diagnose", path, "--samples", "6", "--jacobian-samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "layer 2" in out and "spectral radius" in out and "Lyapunov" in out


def test_centered_nudging_on_conv_nets_has_less_bias():
    """training.nudging: centered on a conv net: nudged phases at +beta_f and -beta_f,
    delta = (rho+ - rho-) / 2; against the BP twin's gradients its error is well below the
    one-sided estimate's at the same (large) beta_f.  The -beta_f phase is the +beta_f phase
    of the net with the nudge's sign flipped."""
    rng = np.random.default_rng(5)
    x = 0.6 * rng.random((6, 64))
    y1h = one_hot(np.arange(6) % 5, 5, np.float64)
    for bf in (0.2, 0.4):
        err = {}
        for centered in (False, True):
            net = tiny_net(seed=4, beta_i=1e-3, beta_f=bf)
            for k in (1, 2):
                net.b[k][:] = 0.5
            ep = EPLearner(net, settler(net, 40, 40), None, norm=dict(net.norm),
                           training=TrainingConfig(
                               nudging="centered" if centered else "one_sided"))
            up, _ = ep.updates(x, y1h)
            gr, _ = BPLearner(net, None).gradients(x, y1h)
            err[centered] = {n: np.linalg.norm(up[n] - gr[n]) / np.linalg.norm(gr[n])
                             for n in ("C1", "C2", "b2")}
        for n in ("C1", "C2", "b2"):
            assert err[True][n] < 0.6 * err[False][n], (bf, n, err)
    st = settler(net, 40, 40)
    free = st.free(x)
    neg = st.nudged(free, y1h, sign=-1.0)
    import dataclasses
    net.blocks = [dataclasses.replace(b, gain=-b.gain) if b.src == 3 else b for b in net.blocks]
    flipped = settler(net, 40, 40).nudged(free, y1h)
    for a, b in zip(neg.s[1:], flipped.s[1:]):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert st._sign == 1.0                     # the sign does not stick to later phases


def test_centered_conv_run_through_the_config(tmp_path):
    from crossbar_ep.runs import train
    run = train.start(conv_cfg(nudging="centered", epochs=1), str(tmp_path))
    assert run.learner.centered
    row = train.fit(run, progress=False)
    assert row is not None


def test_phase_averaged_conv_updates_match_a_reference():
    """settling.average_last on a conv net: the update's states are the means of rho(x) and
    of the pooled maps over each phase's last m steps (checked against stepping the settler
    by hand); m = 1 is the plain update."""
    net = tiny_net(seed=2, beta_i=0.05, beta_f=0.1)
    rng = np.random.default_rng(3)
    x = rng.random((4, 64))
    y1h = one_hot(np.arange(4) % 5, 5, np.float64)
    st = settler(net, 8, 6, average_last=3)
    free = st.free(x)
    s, ref_s, ref_p = st.start_state(x), [0.0, 0.0], [0.0, 0.0]
    for t in range(8):
        s = st.step_map(s)
        if t >= 5:
            for k in range(2):
                maps = st.map.maps(k + 1, s[k + 1])
                ref_s[k] = ref_s[k] + s[k + 1] / 3
                ref_p[k] = ref_p[k] + pool2(maps)[0].reshape(4, -1) / 3
    for k in range(2):
        np.testing.assert_allclose(free.s_mean[k + 1], ref_s[k], atol=1e-12)
        np.testing.assert_allclose(free.e_mean[k + 1], ref_p[k], atol=1e-12)
    ep = EPLearner(net, st, None, norm={k: 1.0 for k in net.norm})
    up, _ = ep.updates(x, y1h)
    nudged = ep.settler.nudged(st.free(x), y1h)
    d2 = (nudged.s_mean[2] - free.s_mean[2]).reshape(-1, 6)
    pre = im2col(free.e_mean[1].reshape(4, 4, 4, 4), 3, 1)
    np.testing.assert_allclose(up["C2"], d2.T @ pre / 4, atol=1e-12)
    assert settler(net, 8, 6).free(x).s_mean is None

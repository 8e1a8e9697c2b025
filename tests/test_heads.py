"""Auxiliary heads (intermediate error signals) and logit distillation (docs/model.md)."""

import json

import numpy as np
import pytest
from conftest import small_config
from test_normalisation import _assert_close, _cos, _scaled_up

import crossbar_ep as cx
from crossbar_ep.model.heads import add_heads
from crossbar_ep.model.learners import BPLearner
from crossbar_ep.model.settle import softmax


def _train(cfg, batches=4):
    from crossbar_ep.runs import train
    run = train.setup(cfg, "unused")
    for i in range(batches):
        idx = np.arange(i * 50, (i + 1) * 50)
        run.learner.train_batch(run.data.x_train[idx], run.data.y_train[idx])
    return run


def test_beta_zero_heads_are_bit_identical_to_no_heads():
    plain = _train(small_config(model={"hidden": [16, 12, 10]}))
    heads = _train(small_config(model={"hidden": [16, 12, 10],
                                       "aux": {"layers": [1, 2], "beta": 0.0}}))
    assert {"A1", "A2"} <= set(heads.net.W)
    for name, W in plain.net.W.items():
        assert np.array_equal(W, heads.net.W[name]), name
    x = plain.data.x_test[:40]
    assert np.array_equal(plain.learner.predict(x), heads.learner.predict(x))
    # with beta > 0 the heads do reach the network
    nudging = _train(small_config(model={"hidden": [16, 12, 10],
                                         "aux": {"layers": [1, 2], "beta": 0.1}}))
    assert not np.array_equal(plain.net.W["W0"], nudging.net.W["W0"])


def test_head_update_is_its_cross_entropy_gradient_at_the_free_state():
    net = cx.make_network([10, 8, 6, 3], beta_i=0.2, beta_f=0.3, seed=2, dtype="float64")
    add_heads(net, [1], beta=0.2, seed=5)
    model = cx.ep_learner(net, T=20, K=8)
    rng = np.random.default_rng(3)
    x, y = rng.random((7, 10)), rng.integers(0, 3, 7)
    y1h = np.eye(3)[y]
    g, free = model.updates(x, y1h)
    A, s1 = net.W["A1"], free.s[1]

    def ce(M):   # mean cross-entropy of the head at the free state
        return -np.mean(np.log(softmax(s1 @ M.T)[np.arange(7), y]))

    for idx in [(0, 0), (1, 3), (2, 7)]:
        Mp, Mm = A.copy(), A.copy()
        Mp[idx] += 1e-6
        Mm[idx] -= 1e-6
        fd = -(ce(Mp) - ce(Mm)) / 2e-6           # ascent direction
        assert g["A1"][idx] == pytest.approx(fd, rel=1e-6, abs=1e-10)


@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_ep_with_heads_matches_bp_of_output_plus_weighted_head_losses(lam):
    """Heads on layers 1 and 2 of a 3-layer chain, nudge gains graded like the output's gain
    at their layer (beta_e = lam beta_f (beta/alpha)^(L-l)): the normalised EP update tends
    to the BP gradient of L_out + lam (l_1 + l_2) on the BP twin with the same heads."""
    beta, beta_f, alpha = 1e-3, 1e-3, 0.8
    net = _scaled_up(cx.make_network([12, 9, 8, 7, 4], seed=8, alpha=alpha, beta_i=beta,
                                     beta_f=beta_f, dtype="float64"))
    graded = [lam * beta_f * (beta / alpha) ** (3 - k) for k in (1, 2)]
    add_heads(net, [1, 2], beta=graded, seed=1, bp_weight=lam)
    rng = np.random.default_rng(2)
    x, y1h = rng.random((30, 12)), np.eye(4)[rng.integers(0, 4, 30)]
    model = cx.ep_learner(net, T=80, K=80, normalised=True, nudge_error="frozen")
    g_ep, _ = model.updates(x, y1h)
    g_bp, _ = BPLearner(net, None).gradients(x, y1h)
    hidden = [p.name for p in net.projections if p.dst <= net.L]
    _assert_close(g_ep, g_bp, hidden + ["Wf"])
    plain = dict(BPLearner(net, None).gradients(x, y1h)[0])
    net.head_weight.update({e: 0.0 for e in net.head_weight})
    no_heads = BPLearner(net, None).gradients(x, y1h)[0]
    assert _cos(plain["W0"], no_heads["W0"]) < 0.999     # the heads' losses really count


def test_bp_twin_with_heads_matches_finite_differences():
    net = cx.make_network([8, 6, 5, 3], seed=3, dtype="float64")
    add_heads(net, [1], beta=0.05, seed=2, bp_weight=0.7)
    rng = np.random.default_rng(4)
    x, y = rng.random((6, 8)), rng.integers(0, 3, 6)
    bp = BPLearner(net, None)
    g, _ = bp.gradients(x, np.eye(3)[y])

    def loss():
        s, _, p = bp.forward(x)
        q = softmax(s[1] @ net.W["A1"].T)
        return -np.mean(np.log(p[np.arange(6), y])) - 0.7 * np.mean(np.log(q[np.arange(6), y]))

    for name in ("W0", "A1", "W1"):
        arr = net.ops[name].dense()
        old = arr[1, 2]
        arr[1, 2] = old + 1e-6
        lp = loss()
        arr[1, 2] = old - 1e-6
        lm = loss()
        arr[1, 2] = old
        assert g[name][1, 2] == pytest.approx(-(lp - lm) / 2e-6, rel=1e-5, abs=1e-10), name


def test_logit_distillation_targets_and_nudge():
    from crossbar_ep.model.distill import LogitDistiller

    class Teacher:
        def predict(self, x):
            return softmax(x[:, :3] * 4.0)

    net = cx.make_network([10, 8, 6, 3], beta_i=0.2, beta_f=0.3, seed=2, dtype="float64")
    heads = add_heads(net, [1], beta=0.2, seed=5)
    rng = np.random.default_rng(6)
    x, y1h = rng.random((5, 10)), np.eye(3)[rng.integers(0, 3, 5)]
    kd = LogitDistiller(Teacher(), list(heads), net.L + 1, tau=2.0, mix=0.3)
    t = kd(x, y1h)
    z = x[:, :3] * 4.0 / 2.0
    soft = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    e = next(iter(heads))
    np.testing.assert_allclose(t[e], 0.7 * y1h + 0.3 * soft, atol=1e-12)
    assert np.array_equal(t[net.L + 1], y1h)
    model = cx.ep_learner(net, T=20, K=8)
    g, free = model.updates(x, t)
    np.testing.assert_allclose(g["A1"], (t[e] - free.heads[e]).T @ free.s[1] / 5, atol=1e-12)
    g_label, _ = model.updates(x, y1h)
    assert np.abs(g["W0"] - g_label["W0"]).max() > 1e-9   # the soft target reaches layer 1


def test_kd_run_from_a_bp_teacher_records_heads_and_layer_signals(tmp_path):
    from crossbar_ep.config.experiment import config_from_dict
    from crossbar_ep.errors import ConfigError
    from crossbar_ep.runs import train

    teacher_cfg = small_config(training={"algorithm": "bp", "epochs": 1})
    run = train.start(teacher_cfg, str(tmp_path / "teacher"))
    train.fit(run, progress=False)
    run.lock = None
    raw = small_config(model={"aux": {"layers": [1], "target": "kd_logits",
                                      "teacher": str(tmp_path / "teacher")}},
                       training={"epochs": 1}).to_dict()
    student = train.start(config_from_dict(raw, "s.yaml"), str(tmp_path / "student"))
    train.fit(student, progress=False)
    student.lock = None
    row = json.load(open(tmp_path / "student" / "metrics.json"))[0]
    assert 0.0 <= row["head_acc_A1"] <= 1.0
    assert row["ds_L1"] > 0 and row["ds_L2"] > 0 and row["dw_W0"] > 0 and row["dw_A1"] > 0
    with pytest.raises(ConfigError, match="teacher"):
        small_config(model={"aux": {"layers": [1], "target": "kd_logits"}})
    with pytest.raises(ConfigError, match="aux.layers"):
        small_config(model={"aux": {"layers": [5]}})
    bad = small_config(model={"aux": {"layers": [1], "target": "kd_logits",
                                      "teacher": str(tmp_path / "student")}},
                       training={"epochs": 1})
    from crossbar_ep.errors import CheckpointError
    with pytest.raises(CheckpointError, match="BP twin"):
        train.start(bad, str(tmp_path / "s2"))


def test_layer_signals_plot(tmp_path):
    from crossbar_ep.plots.layer_signals import plot_layer_signals
    hist = [{"epoch": e, "ds_L1": 0.1 / e, "ds_L2": 0.2 / e, "dw_W0": 0.01 / e,
             "dw_W1": 0.02 / e, "dw_Wf": 0.1} for e in (1, 2, 3)]
    p = plot_layer_signals(hist, str(tmp_path / "sig.png"), "t")
    assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_layer_signals_reach_the_trace_file_and_the_plot_command(tmp_path):
    import h5py

    from crossbar_ep.plots.traces import plot_run_dir
    from crossbar_ep.runs import train
    cfg = small_config(model={"aux": {"layers": [1]}}, training={"epochs": 1},
                       traces={"enabled": True, "trajectories": False})
    run = train.start(cfg, str(tmp_path / "r"))
    train.fit(run, progress=False)
    run.lock = None
    row = json.load(open(tmp_path / "r" / "metrics.json"))[0]
    with h5py.File(tmp_path / "r" / "traces.h5", "r") as f:
        assert f["metrics"]["ds_L2"][0] == pytest.approx(row["ds_L2"])
        assert f["metrics"]["dw_A1"][0] == pytest.approx(row["dw_A1"])
        assert f["metrics"]["head_acc_A1"][0] == pytest.approx(row["head_acc_A1"])
    paths = plot_run_dir(str(tmp_path / "r"))
    assert any(p.endswith("layer_signals.png") for p in paths)


def test_feature_hint_head_update_and_nudge_against_numpy():
    """kd_features: a linear head R on layer 1 nudged toward teacher features f:
    h_1 += beta R^T (f - R s_1) (recomputed every step) and dR = (f - R s0_1) s0_1^T / B,
    the gradient of the hint loss 0.5 |f - R s|^2 at the free state."""
    net = cx.make_network([10, 8, 6, 3], beta_i=0.2, beta_f=0.3, seed=2, dtype="float64")
    heads = add_heads(net, [1], beta=0.15, seed=5, out_sizes=[5], linear=True)
    e = next(iter(heads))
    rng = np.random.default_rng(7)
    x, y1h = rng.random((6, 10)), np.eye(3)[rng.integers(0, 3, 6)]
    f = rng.uniform(-0.5, 0.5, (6, 5))
    model = cx.ep_learner(net, T=20, K=7)
    g, free = model.updates(x, {e: f, net.L + 1: y1h})
    R, s0 = net.W["A1"], free.s[1]

    def hint(M):
        return 0.5 * np.mean(np.sum((f - s0 @ M.T) ** 2, axis=1))

    for idx in [(0, 0), (4, 7)]:
        Mp, Mm = R.copy(), R.copy()
        Mp[idx] += 1e-6
        Mm[idx] -= 1e-6
        assert g["A1"][idx] == pytest.approx(-(hint(Mp) - hint(Mm)) / 2e-6, rel=1e-6)
    W0, W1, Wf = (net.W[n] for n in ("W0", "W1", "Wf"))
    s1, s2 = free.s[1].copy(), free.s[2].copy()
    for _ in range(7):
        p_out = softmax(s2 @ Wf.T)
        h1 = x @ W0.T + 0.2 * s2 @ W1 + 0.15 * (f - s1 @ R.T) @ R
        h2 = s1 @ W1.T + 0.3 * (y1h - p_out) @ Wf
        s1, s2 = np.tanh(h1), np.tanh(h2)
    np.testing.assert_allclose(model.last_nudged.s[1], s1, atol=1e-12)


def test_feature_distillation_run_from_a_bp_teacher(tmp_path):
    from crossbar_ep.config.experiment import config_from_dict
    from crossbar_ep.errors import ConfigError
    from crossbar_ep.runs import train

    run = train.start(small_config(model={"hidden": [10, 12]},
                                   training={"algorithm": "bp", "epochs": 1}),
                      str(tmp_path / "teacher"))
    train.fit(run, progress=False)
    run.lock = None
    raw = small_config(model={"aux": {"layers": [1, 2], "target": "kd_features",
                                      "teacher": str(tmp_path / "teacher")}},
                       training={"epochs": 1}).to_dict()
    cfg = config_from_dict(raw, "s.yaml")
    student = train.start(cfg, str(tmp_path / "student"))
    assert student.net.W["A1"].shape == (10, 24) and student.net.W["A2"].shape == (12, 16)
    train.fit(student, progress=False)
    student.lock = None
    row = json.load(open(tmp_path / "student" / "metrics.json"))[0]
    assert "head_acc_A1" not in row and row["dw_A1"] > 0
    from crossbar_ep import cli                  # the nudge-source split uses the hints' targets
    assert cli.main(["diagnose", str(tmp_path / "student"), "--samples", "6",
                     "--jacobian-samples", "1", "--nudge-sources"]) == 0
    raw["model"]["aux"]["teacher"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="no config.yaml"):
        train.setup(config_from_dict(raw, "s.yaml"), "unused")


def test_heads_run_resumes_bit_identically(tmp_path):
    from crossbar_ep.runs import train
    cfg = small_config(model={"aux": {"layers": [1], "beta": [0.05]}}, training={"epochs": 2})
    full = train.start(cfg, str(tmp_path / "full"))
    train.fit(full, progress=False)
    full.lock = None
    part = train.start(cfg, str(tmp_path / "part"))
    part.cfg = small_config(model={"aux": {"layers": [1], "beta": [0.05]}},
                            training={"epochs": 1})
    train.fit(part, progress=False)
    part.lock = None
    resumed = train.resume(str(tmp_path / "part"), epochs=2)
    train.fit(resumed, progress=False)
    resumed.lock = None
    for name, W in full.net.W.items():
        assert np.array_equal(W, resumed.net.W[name]), name


def test_heads_on_an_ideal_crossbar_reproduce_digital_sgd(tmp_path):
    """Heads are ordinary operators: on crossbar arrays (reads, transposed-read nudges,
    pulse updates) with the ideal card they train exactly like the digital heads."""
    import os

    from conftest import REPO

    from crossbar_ep.runs import train

    def cfg(**xb):
        return small_config(model={"hidden": [24, 16, 12], "aux": {"layers": [1, 2]}},
                            training={"optimizer": "sgd", "lr": 0.05, "epochs": 1},
                            crossbar=xb)
    digital = train.start(cfg(), str(tmp_path / "d"))
    train.fit(digital, progress=False)
    digital.lock = None
    xbar = train.start(cfg(enabled=True, device=os.path.join(REPO, "device_models", "ideal.yaml"),
                           tile_rows=7, tile_cols=5), str(tmp_path / "x"))
    assert {"A1", "A2"} <= set(xbar.learner.pulses.crossbars)
    train.fit(xbar, progress=False)
    xbar.lock = None
    for k in digital.net.W:
        np.testing.assert_allclose(xbar.net.W[k], digital.net.W[k], atol=1e-9)

"""Auxiliary label heads on conv layers (intermediate error signals on conv nets)."""

import numpy as np
import pytest

from crossbar_ep.model.conv import make_conv_network
from crossbar_ep.api import settler
from crossbar_ep.model.learners import BPLearner, EPLearner
from crossbar_ep.model.heads import add_heads
from crossbar_ep.model.learners import one_hot
from crossbar_ep.model.settle import softmax


def cosine(a, b):
    return float(np.vdot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def tiny(beta_i=1e-3, beta_f=1e-3, seed=4):
    net = make_conv_network((1, 8, 8), (4, 6), 5, seed, kernel=3, padding=1, beta_i=beta_i,
                            beta_f=beta_f, dtype="float64")
    for k in (1, 2):                         # biases near the middle of the clip window
        net.b[k][:] = 0.5
    return net


@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_conv_heads_ep_matches_bp_of_output_plus_weighted_head_loss(lam):
    """A head on conv layer 1 with its nudge graded like the output's gain there
    (beta_e = lam beta_f beta_i): the normalised EP update tends to the BP gradient of
    L_out + lam l_1 on the BP twin with the same head (cosine > 0.99, norm within 10%)."""
    beta_i = beta_f = 1e-3
    net = tiny(beta_i, beta_f)
    add_heads(net, [1], beta=lam * beta_f * beta_i, seed=1, bp_weight=lam)
    assert net.norm["C1"] == pytest.approx(beta_f * beta_i) and net.norm["A1"] == 1.0
    rng = np.random.default_rng(5)
    x = 0.6 * rng.random((6, 64))
    y1h = one_hot(np.arange(6) % 5, 5, np.float64)
    ep = EPLearner(net, settler(net, 40, 40), None, norm=dict(net.norm))
    up, free = ep.updates(x, y1h)
    bp = BPLearner(net, None)
    gr, _ = bp.gradients(x, y1h)
    for name in ("C1", "C2", "Wf", "b1", "b2", "b3"):
        c = cosine(up[name], gr[name])
        assert c > 0.99, (name, c)
        ratio = np.linalg.norm(up[name]) / np.linalg.norm(gr[name])
        assert 0.9 < ratio < 1.1, (name, ratio)
    # the head learns its own cross-entropy gradient at the free state (BP: times lam)
    assert cosine(up["A1"], gr["A1"]) > 0.99
    p1 = free.e[1]
    np.testing.assert_allclose(up["A1"], (y1h - softmax(p1 @ net.W["A1"].T)).T @ p1 / 6,
                               rtol=1e-10, atol=1e-12)
    # the head's loss really reaches conv 1 in the BP twin and in EP
    net.head_weight[next(iter(net.head_weight))] = 0.0
    assert cosine(bp.gradients(x, y1h)[0]["C1"], gr["C1"]) < 0.999


def test_conv_head_with_zero_beta_only_reads():
    rng = np.random.default_rng(0)
    x, y1h = 0.6 * rng.random((4, 64)), one_hot(np.arange(4) % 5, 5, np.float64)
    plain = tiny(beta_i=0.05, beta_f=0.3)
    heads = tiny(beta_i=0.05, beta_f=0.3)
    add_heads(heads, [1, 2], beta=0.0)
    a = EPLearner(plain, settler(plain, 8, 5), None).updates(x, y1h)[0]
    b = EPLearner(heads, settler(heads, 8, 5), None).updates(x, y1h)[0]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert {"A1", "A2"} <= set(b)
    nudging = tiny(beta_i=0.05, beta_f=0.3)
    add_heads(nudging, [1], beta=0.3)
    c = EPLearner(nudging, settler(nudging, 8, 5), None).updates(x, y1h)[0]
    assert not np.array_equal(a["C1"], c["C1"])


def test_conv_heads_through_the_config(tmp_path):
    """model.aux on a conv experiment: heads train, their test accuracies are in the metrics,
    runs resume exactly; on an ideal crossbar card (heads on arrays too) the run is the
    digital one; feature hints (a dense teacher's layers) are refused on conv nets."""
    from tests.test_conv import conv_cfg
    from crossbar_ep.errors import ConfigError
    from crossbar_ep.runs import train
    from dataclasses import replace

    def cfg(epochs, **xb):
        c = conv_cfg(epochs=epochs, optimizer="sgd", lr=0.2, weight_decay=0.0)
        c = replace(c, model=replace(c.model, aux=replace(c.model.aux, layers=(1,),
                                                         beta=0.2)))
        return replace(c, crossbar=replace(c.crossbar, **xb)) if xb else c
    full = train.start(cfg(2), str(tmp_path / "full"))
    train.fit(full, progress=False)
    assert "head_acc_A1" in full.history[-1] and 0 <= full.history[-1]["head_acc_A1"] <= 1
    part = train.start(cfg(1), str(tmp_path / "part"))
    train.fit(part, progress=False)
    resumed = train.resume(str(tmp_path / "part"), epochs=2)
    train.fit(resumed, progress=False)
    for name in ("C1", "C2", "Wf", "A1"):
        np.testing.assert_array_equal(full.net.W[name], resumed.net.W[name])
    import os
    from tests.conftest import REPO
    xbar = train.start(cfg(2, enabled=True, device=os.path.join(REPO, "device_models",
                                                                "ideal.yaml"),
                           layers=("all",)), str(tmp_path / "x"))
    assert "A1" in xbar.learner.pulses.crossbars
    train.fit(xbar, progress=False)
    for name in ("C1", "C2", "Wf", "A1"):
        np.testing.assert_allclose(xbar.net.W[name], full.net.W[name], atol=1e-9)
    from crossbar_ep.errors import CrossbarEPError
    from crossbar_ep.runs.export import export_tile
    ex = export_tile(str(tmp_path / "x"), "A1", 0, 0, 0)     # a head's tile exports too:
    free = xbar.learner.settler.free(xbar.data.x_test[:1])   # driven by layer 1's pooled map
    per = xbar.learner.pulses.crossbars["A1"].per
    np.testing.assert_allclose(ex.V / (per.v_read_V / per.input_range),
                               free.e[1].reshape(-1), atol=1e-6)
    with pytest.raises(CrossbarEPError, match="carries the nudge"):
        export_tile(str(tmp_path / "x"), "A1", 0, 0, 0, transposed=True)
    with pytest.raises(ConfigError, match="model.aux.target"):
        from tests.conftest import small_config
        small_config(data={"synthetic_features": 64},
                     model={"activation": "hard_sigmoid",
                            "conv": {"channels": [4], "kernel": 3, "padding": 1,
                                     "input_shape": [1, 8, 8]},
                            "aux": {"layers": [1], "target": "kd_features",
                                    "teacher": "somewhere"}})

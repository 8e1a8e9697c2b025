"""The Python API: the README example runs as written; operators, attach, settle, fit."""

import os
import re

import numpy as np
import pytest
from conftest import REPO

import crossbar_ep as cx
from crossbar_ep.model.settle import settle_reference


def _readme_block() -> str:
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)    # the example names its card by name: any folder works
    code = _readme_block().replace('"metrics.csv"', repr(str(tmp_path / "metrics.csv")))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)   # noqa: S102 - our own README
    out = capsys.readouterr().out
    acc = float(re.search(r"validation accuracy ([\d.]+)%", out).group(1))
    assert acc > 90.0, out            # the task is easy: the in-situ net must learn it
    assert int(re.search(r"(\d+) pulses on W1", out).group(1)) > 0
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 4   # header + 3 epochs
    assert isinstance(scope["net"].ops["W1"], cx.CrossbarMatrix)


def test_settle_through_the_api_matches_the_numpy_reference():
    net = cx.make_network([10, 8, 6, 3], beta_i=0.2, beta_f=0.3, seed=1, dtype="float64")
    model = cx.ep_learner(net, T=15, K=6, nudge_error="recomputed")
    rng = np.random.default_rng(0)
    x, y = rng.random((7, 10)), rng.integers(0, 3, 7)
    free = model.settle(x)
    ref = settle_reference(net, x, 15)
    for k in (1, 2):
        np.testing.assert_allclose(free.s[k], ref[k], atol=1e-12)
    nudged = model.settle(x, y, free)
    y1h = np.eye(3)[y]
    ref_n = settle_reference(net, x, 6, s_init=free.s, y=y1h)
    for k in (1, 2):
        np.testing.assert_allclose(nudged.s[k], ref_n[k], atol=1e-12)


def test_attach_crossbar_replaces_the_operator_and_reads_like_it():
    net = cx.make_network([12, 9, 5], seed=3, dtype="float64")
    W = net.W["W0"].copy()
    cb = cx.attach_crossbar(net, "W0", os.path.join(REPO, "device_models", "ideal.yaml"))
    assert net.ops["W0"] is cb and cb.exact_linear
    np.testing.assert_allclose(cb.dense(), W, atol=1e-12)   # ideal device: exact programming
    x = np.random.default_rng(1).random((4, 12))
    np.testing.assert_allclose(cb.read(x), x @ W.T, atol=1e-12)
    with pytest.raises(cx.CrossbarEPError, match="not a projection"):
        cx.attach_crossbar(net, "W7", os.path.join(REPO, "device_models", "ideal.yaml"))


@pytest.mark.parametrize("rule", ["mixed_precision", "tiki_taka"])
def test_attach_crossbar_with_a_stateful_pulse_rule_trains(rule):
    """Rules with per-array state (accumulators, fast arrays) get it from attach_crossbar."""
    from crossbar_ep.crossbar.mixed_precision import MixedPrecision
    from crossbar_ep.crossbar.tiki_taka import TikiTaka
    net = cx.make_network([20, 16, 4], seed=0, lr=0.2)
    r = MixedPrecision() if rule == "mixed_precision" else TikiTaka(transfer_columns=8)
    cb = cx.attach_crossbar(net, "W0", os.path.join(REPO, "device_models",
                                                    "ecram_li_tang2018.yaml"), rule=r)
    assert ("chi" if rule == "mixed_precision" else "fast") in cb.rule_state
    W = cb.dense().copy()
    model = cx.ep_learner(net, T=6, K=4, optimizer="sgd")
    rng = np.random.default_rng(0)
    for _ in range(3):
        model.train_batch(rng.random((8, 20)).astype(np.float32), np.arange(8) % 4)
    if rule == "mixed_precision":    # the accumulator integrated the updates
        assert np.abs(cb.rule_state["chi"]).max() > 0
    else:                            # the fast array took the EP pulses
        assert np.abs(cb.rule_state["fast"].dense()).max() > 1e-3
    assert np.isfinite(cb.dense()).all() and cb.dense().shape == W.shape


def test_digital_matrix_protocol():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((5, 4))
    op = cx.DigitalMatrix(W.copy(), "W")
    v, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 5))
    out = np.ones((3, 5))
    op.read_into(v, out, gain=2.0, accumulate=True)
    np.testing.assert_allclose(out, 1.0 + 2.0 * v @ W.T)
    back = np.zeros((3, 4))
    op.read_transposed_into(y, back, gain=0.5)
    np.testing.assert_allclose(back, 0.5 * y @ W)
    opt = cx.SGD([("W", op.W)], {"W": 0.1})
    op.optimizer = opt
    v0 = op.version
    opt.begin()
    op.update(v, y, 0.5)                        # W += lr * scale * y^T v
    np.testing.assert_allclose(op.W, W + 0.1 * 0.5 * y.T @ v, atol=1e-12)
    assert op.version > v0                      # stacked copies notice the change
    state = {k: a.copy() for k, a in op.state_dict().items()}
    op.W[...] = 0.0
    op.load_state_dict(state)
    np.testing.assert_allclose(op.W, W + 0.05 * y.T @ v, atol=1e-12)


def test_settler_restacks_only_when_an_operator_changes():
    """No forgotten refresh: an update through the operator reaches the next settle."""
    net = cx.make_network([6, 5, 4, 3], seed=0, dtype="float64")
    model = cx.ep_learner(net, T=8, K=4, optimizer="sgd", lr=0.5)
    x = np.random.default_rng(3).random((4, 6))
    before = model.settle(x).s[1].copy()
    model.train_batch(x, np.array([0, 1, 2, 0]))   # changes every operator
    after = model.settle(x)
    ref = settle_reference(net, x, 8)
    np.testing.assert_allclose(after.s[1], ref[1], atol=1e-12)
    assert np.abs(after.s[1] - before).max() > 1e-6


def test_any_number_of_nudge_sources_is_one_more_block():
    """An auxiliary head on layer 1 (its own readout operator, error and nudge gain) settles
    like a brute-force NumPy loop over the same equations; the settle loop is unchanged."""
    from crossbar_ep.model.network import Block
    from crossbar_ep.model.settle import softmax

    net = cx.make_network([10, 8, 6, 3], beta_i=0.2, beta_f=0.3, seed=4, dtype="float64")
    rng = np.random.default_rng(5)
    A = rng.uniform(-0.5, 0.5, (3, 8))
    net.ops["A1"] = cx.DigitalMatrix(A.copy(), "A1", trainable=False)
    aux, beta_a = 4, 0.25
    net.head_sizes[aux] = 3
    net.blocks += [Block("A1", 1, aux), Block("A1", aux, 1, beta_a, True)]
    model = cx.ep_learner(net, T=12, K=7, nudge_error="recomputed")
    x, y = rng.random((5, 10)), rng.integers(0, 3, 5)
    y1h = np.eye(3)[y]
    free = model.settle(x)
    nudged = model.settle(x, y, free)
    assert set(free.heads) == {3, aux}

    W0, W1, Wf = (net.W[n] for n in ("W0", "W1", "Wf"))
    s1, s2 = free.s[1].copy(), free.s[2].copy()
    for _ in range(7):       # nudged phase from the free fixed point, errors recomputed
        p_out = softmax(s2 @ Wf.T)
        p_aux = softmax(s1 @ A.T)
        h1 = x @ W0.T + 0.2 * s2 @ W1 + beta_a * (y1h - p_aux) @ A
        h2 = s1 @ W1.T + 0.3 * (y1h - p_out) @ Wf
        s1, s2 = np.tanh(h1), np.tanh(h2)
    np.testing.assert_allclose(nudged.s[1], s1, atol=1e-12)
    np.testing.assert_allclose(nudged.s[2], s2, atol=1e-12)
    np.testing.assert_allclose(nudged.heads[aux], softmax(s1 @ A.T), atol=1e-12)
    # without the auxiliary nudge block the aux head only reads: layer 1 differs
    net.blocks.pop()
    plain = cx.ep_learner(net, T=12, K=7).settle(x, y)
    assert np.abs(plain.s[1] - nudged.s[1]).max() > 1e-6


def test_fit_with_trace_callback_writes_a_readable_trace_file(tmp_path):
    from crossbar_ep.io.traces import open_run

    net = cx.make_network([12, 8, 6, 3], beta_i=0.1, beta_f=0.5, lr=0.05, seed=2)
    cx.attach_crossbar(net, "W1", os.path.join(REPO, "device_models", "ecram_li_tang2018.yaml"),
                       periphery=cx.Periphery(adc_bits=8), tile_rows=4)
    model = cx.ep_learner(net, T=6, K=3, optimizer="sgd")
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 12)), rng.integers(0, 3, 60)
    hist = cx.fit(model, x, y, epochs=2, batch_size=20,
                  callbacks=[cx.Traces(str(tmp_path / "run"), batches=(0,), samples=2)])
    with open_run(str(tmp_path / "run")) as tr:
        assert tr.epochs == [1, 2]
        np.testing.assert_allclose(tr.metrics["train_acc"], [r["train_acc"] for r in hist])
        assert tr.settle(2)["free_steps"].shape == (3,)
        G = tr.conductance(2, "W1")                   # the array's conductances (S)
        np.testing.assert_allclose(G["G_pos"], net.ops["W1"].pos.conductance(), rtol=1e-6)

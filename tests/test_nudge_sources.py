"""Splitting each layer's EP signal by nudge source (`diagnose --nudge-sources`)."""

import numpy as np
import pytest

import crossbar_ep as cx
from crossbar_ep import cli
from crossbar_ep.model.heads import add_heads
from crossbar_ep.model.nudge_sources import signal_by_source
from crossbar_ep.api import settler
from crossbar_ep.model.settle import settle_reference, softmax


def _net(beta_i=0.1, beta_f=0.1, head_beta=0.1):
    net = cx.make_network([12, 10, 9, 8, 7, 4], seed=3, beta_i=beta_i, beta_f=beta_f,
                          dtype="float64")
    add_heads(net, [2], beta=head_beta, seed=1)
    return net


def _data(n=25):
    rng = np.random.default_rng(4)
    return rng.random((n, 12)), np.eye(4)[rng.integers(0, 4, n)]


def test_output_alone_matches_a_numpy_settle():
    """The output's share equals a plain NumPy settle with the output nudge only (frozen
    error), independent of the settle loop's block machinery."""
    net = _net()
    x, y1h = _data()
    T, K = 60, 40
    rep = signal_by_source(net, lambda: settler(net, T, K, nudge_error="frozen"), x, y1h)
    s0 = settle_reference(net, x, T)
    p0 = softmax(s0[net.L] @ net.W["Wf"].T)
    sb = settle_reference(net, x, K, s_init=s0, y=y1h, frozen_p=p0)
    ref = [np.abs(sb[k] - s0[k]).mean() for k in range(1, net.L + 1)]
    np.testing.assert_allclose(rep.signal["Wf"], ref, rtol=1e-6, atol=1e-12)


def test_parts_add_up_and_a_head_moves_the_layers_above_it():
    net = _net(head_beta=1e-3, beta_f=1e-3)       # small nudges: a linear response
    x, y1h = _data()
    blocks = list(net.blocks)
    rep = signal_by_source(net, lambda: settler(net, 60, 60, nudge_error="frozen"), x, y1h)
    assert net.blocks == blocks                   # the gains are restored
    assert set(rep.signal) == {"all", "Wf", "A2"}
    assert rep.nonlinear.max() < 0.01            # signed parts add up to the whole
    n2 = _net()
    big = signal_by_source(n2, lambda: settler(n2, 60, 60, nudge_error="frozen"), x, y1h)
    assert big.nonlinear.max() > rep.nonlinear.max()   # beta 0.1: less linear
    head = rep.signal["A2"]                       # head on layer 2 of 4
    # down through feedback: about beta_i per hop; up through forward links: order 1
    assert head[0] < 0.2 * head[1]
    assert head[2] > 0.2 * head[1] and head[3] > 0.05 * head[1]
    out = rep.signal["Wf"]                        # the output's own nudge falls going down
    assert out[0] < 1e-3 * out[3]
    assert "output (Wf)" in rep.text() and "nonlinear" in rep.text()


def test_blocks_restored_when_the_settle_fails():
    net = _net()
    x, y1h = _data()
    blocks = list(net.blocks)

    def broken():
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        signal_by_source(net, broken, x, y1h)
    assert net.blocks == blocks


def test_diagnose_cli_prints_the_split(tmp_path, capsys, monkeypatch):
    from conftest import small_config
    from crossbar_ep.config.experiment import dump_config
    cfg = small_config(model={"hidden": [10, 8, 6], "aux": {"layers": [1], "beta": 0.1}})
    path = tmp_path / "h.yaml"
    dump_config(cfg, str(path))
    png = tmp_path / "split.png"
    assert cli.main(["diagnose", str(path), "--samples", "8", "--jacobian-samples", "1",
                     "--nudge-sources", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "EP signal by nudge source" in out and "A1" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["diagnose", str(path), "--plot", str(png)]) == 2
    assert "add --nudge-sources" in capsys.readouterr().err

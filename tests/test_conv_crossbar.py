"""Conv kernels on crossbar arrays: patch reads, transposed reads + col2im, pulse updates."""

import os

import numpy as np
import pytest
from conftest import REPO

from crossbar_ep.crossbar.array import CrossbarMatrix
from crossbar_ep.crossbar.pulses import StochasticCoincidence
from crossbar_ep.devices.card import load_card
from crossbar_ep.model.conv import ConvGeom, ConvOperator
from crossbar_ep.model.operators import DigitalMatrix
from crossbar_ep.runs import train
from test_conv import conv_cfg, convT_loop

IDEAL = os.path.join(REPO, "device_models", "ideal.yaml")
RPU = os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")


def sgd_conv(nudging="one_sided", **xb):
    cfg = conv_cfg(optimizer="sgd", lr=0.2, weight_decay=0.0, epochs=2, nudging=nudging)
    if not xb:
        return cfg
    from dataclasses import replace

    from crossbar_ep.config.experiment import config_from_dict
    raw = cfg.to_dict()
    raw["crossbar"].update(xb)
    return replace(config_from_dict(raw, "tiny.yaml"))


@pytest.mark.parametrize("nudging", ["one_sided", "centered"])
def test_ideal_card_reproduces_digital_conv_run(tmp_path, nudging):
    digital = train.start(sgd_conv(nudging), str(tmp_path / "d"))
    train.fit(digital, progress=False)
    xbar = train.start(sgd_conv(nudging, enabled=True, device=IDEAL, tile_rows=7,
                                tile_cols=5), str(tmp_path / "x"))
    assert set(xbar.learner.pulses.crossbars) == {"C1", "C2", "Wf"}
    assert xbar.net.convs[1].matrix is xbar.net.ops["C2"]
    train.fit(xbar, progress=False)
    for k in digital.net.W:
        np.testing.assert_allclose(xbar.net.W[k], digital.net.W[k], atol=1e-9)
    assert [r["test_acc"] for r in xbar.history] == [r["test_acc"] for r in digital.history]
    assert xbar.history[-1]["energy_total_J"] > 0.0


def test_tiled_transposed_read_plus_col2im_equals_convT():
    rng = np.random.default_rng(0)
    g = ConvGeom(3, 6, 5, 7, 3, 1)
    W = rng.uniform(-0.3, 0.3, (7, g.patch))
    cb = CrossbarMatrix(W, load_card(IDEAL), np.random.default_rng(1), tile_rows=8,
                        tile_cols=3, dtype=np.float64)
    assert len(cb.row_tiles) > 1 and len(cb.col_tiles) > 1
    Wk = cb.dense().reshape(7, 3, 3, 3)
    y = rng.standard_normal((2, g.h_out, g.w_out, 7))
    x = rng.standard_normal((2, 6, 5, 3))
    xb, dig = ConvOperator(g, cb), ConvOperator(g, DigitalMatrix(cb.dense().copy()))
    np.testing.assert_allclose(xb.conv_t(y), convT_loop(y, Wk, 6, 5, 1), atol=1e-10)
    np.testing.assert_allclose(xb.conv(x), dig.conv(x), atol=1e-10)


def test_stochastic_update_counts_every_image_patch_pair():
    """Every (image, patch) row is one coincidence stream: per device the signed count is a
    sum of independent Binomial(bl, p_r q_r) draws, mean lr * (sum over positions, mean over
    images of delta (x) patch) / step, variance sum_r bl p_r q_r (1 - p_r q_r)."""
    rng = np.random.default_rng(2)
    g = ConvGeom(1, 3, 3, 2, 2, 0)                 # 4 positions, patches of 4
    B, bl, lr = 2, 31, 0.01
    card = load_card(RPU)
    cb = CrossbarMatrix(np.full((2, 4), 0.05), card, np.random.default_rng(3),
                        dtype=np.float64)
    cb.rule = StochasticCoincidence(rng=np.random.default_rng(4), bl=bl,
                                    update_management=False)
    cb.lr = lr
    op = ConvOperator(g, cb)
    x = rng.uniform(0.1, 1.0, (B, 9))
    delta = rng.uniform(-0.5, 0.5, (B, 4 * 2))
    pre, d = op.patches(x), delta.reshape(-1, 2)
    step_w = card.mean_step * 2 * cb.scale / (card.w_max - card.w_min)
    c = lr / (B * bl * step_w)                      # A * B of the rule, balanced: sqrt each
    P, Q = np.sqrt(c) * np.abs(pre), np.sqrt(c) * np.abs(d)
    assert P.max() < 1 and Q.max() < 1
    r = Q[:, :, None] * P[:, None, :]               # (rows, n_out, n_in)
    sign = np.sign(d)[:, :, None] * np.sign(pre)[:, None, :]
    mean = bl * (sign * r).sum(0)
    var = bl * (r * (1 - r)).sum(0)
    np.testing.assert_allclose(mean * step_w, lr * (d.T @ pre) / B, rtol=1e-12)
    trials = 3000
    counts = np.empty((trials, 2, 4))
    for t in range(trials):
        op.update(x, delta, 1.0 / B)
        counts[t] = cb.last_counts
    m, v = counts.mean(0), counts.var(0)
    assert np.all(np.abs(m - mean) <= 5 * np.sqrt(var / trials))
    np.testing.assert_allclose(v, var, rtol=0.2)


@pytest.mark.parametrize("scheme", ["deterministic", "stochastic"])
def test_real_card_with_periphery_trains_conv_and_counts_patch_reads(tmp_path, scheme):
    ecram = os.path.join(REPO, "device_models", "ecram_li_tang2018.yaml")
    cfg = sgd_conv(enabled=True, device=ecram, layers=["C1", "C2", "Wf"],
                   periphery={"dac_bits": 7, "adc_bits": 9, "read_noise": 0.01,
                              "read_noise_mode": "output"},
                   update={"scheme": scheme, "max_pulses": 31})
    run = train.start(cfg, str(tmp_path / "r"))
    meter = run.learner.settler.meter
    seen = []
    orig = meter.on_read
    meter.on_read = lambda op, v, tr: (seen.append((op, v.shape[0], tr)), orig(op, v, tr))
    x, y = run.data.x_train[:32], run.data.y_train[:32]
    run.learner.train_batch(x, y)
    c2 = run.net.ops["C2"]
    reads = [(n, tr) for op, n, tr in seen if op is c2]
    # one analog read per patch: forward T + K times, transposed (feedback into layer 1)
    # T + K times, and the zero-image start (one image, 16 patches) once
    assert reads.count((32 * 16, False)) == 6 + 4
    assert reads.count((32 * 16, True)) == 6 + 4
    assert reads.count((16, False)) == 1 and len(reads) == 21
    c1_t = [(n, tr) for op, n, tr in seen if op is run.net.ops["C1"]]
    assert c1_t == [(32 * 64, False)]                     # conv1 of the input: once
    train.fit(run, progress=False)
    row = run.history[-1]
    assert row["pulses_total"] > 0 and np.isfinite(row["test_loss"])


def test_export_netlist_of_a_conv_kernel_tile_drives_one_patch(tmp_path):
    from crossbar_ep.runs.export import export_tile
    from dataclasses import replace
    cfg = sgd_conv(enabled=True, device=IDEAL, periphery={"dac_bits": 7, "adc_bits": 9})
    cfg = replace(cfg, training=replace(cfg.training, epochs=1))
    run = train.start(cfg, str(tmp_path / "r"))
    train.fit(run, progress=False)
    x = run.data.x_test[0].reshape(8, 8)
    ex = export_tile(str(tmp_path / "r"), "C1", 0, 0, 0)
    per = run.learner.pulses.crossbars["C1"].per
    patch = x[3:6, 3:6].reshape(-1)      # centre output (4, 4), k 3, padding 1: rows 3..5
    np.testing.assert_allclose(ex.V / (per.v_read_V / per.input_range), patch,
                               atol=per.input_range / 63 / 2 + 1e-12)
    with pytest.raises(Exception, match="never read transposed"):
        export_tile(str(tmp_path / "r"), "C1", 0, 0, 0, transposed=True)
    ex2 = export_tile(str(tmp_path / "r"), "C2", 0, 0, 0, transposed=True)
    assert ex2.V.size == 2 * 6                     # six output channels, +V/-V pairs


def test_compare_runs_conv_experiments_unchanged(tmp_path):
    from dataclasses import replace

    from crossbar_ep.runs.compare import run_pair
    cfg = sgd_conv(enabled=True, device=IDEAL, tile_rows=7, tile_cols=5)
    cfg = replace(cfg, training=replace(cfg.training, epochs=1))
    res = run_pair(cfg, str(tmp_path / "cmp"), progress=False, log=lambda *a: None)
    assert set(res) == {"digital", "crossbar"}
    assert res["digital"]["best_test_acc"] == res["crossbar"]["best_test_acc"]


def test_conv_diagnose_on_noisy_arrays_measures_the_dynamics(tmp_path):
    """Finite differences through read noise would report the noise (a spectral radius in
    the hundreds); diagnose takes the Jacobian and FTLE of the arrays' weights read exactly,
    so it equals the digital net with the same weights, and the arrays are restored."""
    import copy
    from crossbar_ep.model.conv_diagnostics import diagnose_conv
    from crossbar_ep.api import settler
    cfg = sgd_conv(enabled=True, device=os.path.join(REPO, "device_models",
                                                      "ecram_li_tang2018.yaml"),
                   periphery={"adc_bits": 8, "read_noise": 0.05})
    run = train.start(cfg, str(tmp_path / "r"))
    x = run.data.x_test[:4]
    arrays = dict(run.net.ops)
    rep = diagnose_conv(run.learner.settler, x)
    assert rep.exact == ["C1", "C2", "Wf"]
    assert all(run.net.ops[n] is arrays[n] for n in arrays)
    assert run.net.convs[1].matrix is arrays["C2"]
    digital = copy.deepcopy(run.net)
    for name, op in arrays.items():
        digital.attach(name, DigitalMatrix(np.array(op.dense(), dtype=digital.dtype), name))
    st = settler(digital, cfg.training.T, cfg.training.K)
    ref = diagnose_conv(st, x)
    assert not ref.exact
    # at the noisy run's free state vs the digital one's: the same map, nearby points
    np.testing.assert_allclose(rep.spectral_radius, ref.spectral_radius, rtol=0.15)
    assert rep.spectral_radius.max() < 1 and rep.ftle.max() < 0
    from crossbar_ep.model.conv_diagnostics import spectral_radius
    free = run.learner.settler.free(x)        # what finite differences through noise give
    naive = spectral_radius(run.learner.settler, list(free.s[1:]), x)
    assert naive.min() > 10


def test_conv_readout_reads_average_matches_numpy_reference(tmp_path):
    """settling.readout_reads on a conv net: the phase's logits are the mean of n noisy
    reads of Wf at the pooled top maps, plus the bias (the array's noise stream replayed)."""
    from dataclasses import replace
    cfg = sgd_conv(enabled=True, device=RPU, layers=["Wf"],
                   periphery={"read_noise": 0.05})
    cfg = replace(cfg, settling=replace(cfg.settling, readout_reads=3))
    run = train.start(cfg, str(tmp_path / "r"))
    st, op = run.learner.settler, run.net.ops["Wf"]
    assert st.readout_reads == 3
    x = run.data.x_train[:6]
    state = op.rng.bit_generator.state
    ph = st.free(x)             # a free phase reads Wf only for its readout, at its end
    op.rng.bit_generator.state = state
    v = ph.e[len(run.net.convs)]
    z = np.mean([op.read(v) for _ in range(3)], axis=0) + run.net.b[len(run.net.convs) + 1]
    from crossbar_ep.model.activations import softmax
    np.testing.assert_allclose(ph.p, softmax(z), atol=1e-12)

"""IR drop in the crossbar reads: tile maps from nodal analysis, reciprocity, lagged refresh,
and training with wire resistance through the whole settling loop."""

import os

import numpy as np
import pytest
from conftest import REPO

from crossbar_ep.circuit.ir_drop import WireSettings, combination, physical_tile, transposed_drive
from crossbar_ep.circuit.nodal import TileCircuit, Wires
from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery
from crossbar_ep.devices.card import load_card


def cardfile(name):
    return load_card(os.path.join(REPO, "device_models", name))


@pytest.fixture
def W():
    return np.random.default_rng(0).uniform(-0.1, 0.1, (13, 21))


def brute_force_reads(cb, x, y, wires):
    """Forward and transposed reads built device by device from TileCircuit solves of each
    physical tile with the drive voltages themselves (no effective matrices)."""
    per = cb.per
    volts = per.v_read_V / per.input_range
    gp, gn = cb.pos.conductance(), None if cb.neg is None else cb.neg.conductance()
    g_ref = 0.5 * (cb.card.g_min_S + cb.card.g_max_S)
    fwd = np.zeros((x.shape[0], cb.n_out))
    bwd = np.zeros((y.shape[0], cb.n_in))
    for rt in cb.row_tiles:
        for ct in cb.col_tiles:
            G = physical_tile(gp[ct, rt], None if gn is None else gn[ct, rt], g_ref)
            C = combination(ct.stop - ct.start, cb.signed)
            I = TileCircuit(G, wires, False).sensed_currents(x[:, rt].T * volts)
            fwd[:, ct] += (C @ I).T / cb.current_factor()
            Vy = y[:, ct].T * volts
            I = TileCircuit(G, wires, True).sensed_currents(transposed_drive(Vy, cb.signed))
            if cb.signed == "reference":     # reference column at 0 V, subtracted digitally
                I = I - g_ref * Vy.sum(axis=0)
            bwd[:, rt] += I.T / cb.current_factor()
    return fwd, bwd


@pytest.mark.parametrize("signed", ["differential", "reference"])
@pytest.mark.parametrize("wires", [Wires(3.0, 5.0, 40.0, 40.0), Wires(8.0, 2.0, 100.0, 10.0)])
def test_reads_with_wires_match_direct_nodal_solves(W, signed, wires):
    card = cardfile("ecram_li_tang2018.yaml")
    cb = CrossbarMatrix(W, card, np.random.default_rng(1), signed=signed, tile_rows=8,
                        tile_cols=5, dtype=np.float64, wires=WireSettings.of(wires))
    x = np.random.default_rng(2).uniform(-1, 1, (4, 21))
    y = np.random.default_rng(3).uniform(-1, 1, (4, 13))
    fwd, bwd = brute_force_reads(cb, x, y, wires)
    np.testing.assert_allclose(cb.forward(x), fwd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cb.transposed(y), bwd, rtol=1e-9, atol=1e-12)
    # the drop is visible: reads differ from the ideal product by more than rounding
    assert np.abs(cb.forward(x) - x @ cb.W_eff.T).max() > 1e-4 * np.abs(fwd).max()


def test_negligible_wires_give_the_ideal_read(W):
    card = cardfile("ecram_li_tang2018.yaml")
    cb = CrossbarMatrix(W, card, np.random.default_rng(1), tile_rows=8, tile_cols=5,
                        dtype=np.float64, wires=WireSettings.of(Wires(1e-9, 1e-9, 1e-9, 1e-9)))
    x = np.random.default_rng(2).uniform(-1, 1, (4, 21))
    np.testing.assert_allclose(cb.forward(x), x @ cb.W_eff.T, rtol=1e-6, atol=1e-9)


def test_ir_drop_attenuates_far_devices():
    """All devices equal: weights fall along each row away from the drivers (column 0) and
    along each column away from the sense amplifiers (row m - 1); the far corner, row 0 of
    the last output, sees the largest drop."""
    card = cardfile("ideal.yaml")
    W = np.full((8, 8), 0.05)
    cb = CrossbarMatrix(W, card, np.random.default_rng(0), tile_rows=8, tile_cols=8,
                        dtype=np.float64, wires=WireSettings.of(Wires(50.0, 50.0, 0.0, 0.0)))
    fwd = cb.read_operand((0, 0))        # (inputs = physical rows, outputs)
    assert np.all(np.diff(fwd, axis=1) < 0)
    assert np.all(np.diff(fwd, axis=0) > 0)
    assert fwd.min() == fwd[0, -1] < 0.95 * 0.05


def test_lagged_refresh_tracks_exact_solves(W):
    """Between exact solves the first-order maps stay much closer to the exact ones than the
    maps frozen at the last solve."""
    card = cardfile("ecram_li_tang2018.yaml")
    wires = Wires(5.0, 5.0, 50.0, 50.0)
    kw = dict(tile_rows=8, tile_cols=5, dtype=np.float64)
    lag = CrossbarMatrix(W, card, np.random.default_rng(1), wires=WireSettings.of(wires, 1000), **kw)
    ref = CrossbarMatrix(W, card, np.random.default_rng(1), wires=WireSettings.of(wires, 1), **kw)
    tiles = [(i, j) for i in range(len(lag.row_tiles)) for j in range(len(lag.col_tiles))]
    frozen = {k: lag.read_operand(k).copy() for k in tiles}
    rng = np.random.default_rng(7)
    for _ in range(5):
        dW = rng.normal(0, 0.01, W.shape)
        lag.apply_update(dW, 31)
        ref.apply_update(dW, 31)
    assert next(iter(lag.reader.circuits.values())).exact_solves == 1
    assert next(iter(ref.reader.circuits.values())).exact_solves == 6
    err_lag = max(np.abs(lag.read_operand(k) - ref.read_operand(k)).max() for k in frozen)
    err_frozen = max(np.abs(frozen[k] - ref.read_operand(k)).max() for k in frozen)
    assert err_lag < 0.05 * err_frozen
    lag.refresh(exact=True)
    for k in frozen:
        np.testing.assert_allclose(lag.read_operand(k), ref.read_operand(k), atol=1e-12)


def test_reciprocity_shortcut_equals_solving_both_circuits(W):
    card = cardfile("ecram_li_tang2018.yaml")
    w = Wires(4.0, 6.0, 30.0, 30.0)
    cb = CrossbarMatrix(W, card, np.random.default_rng(1), tile_rows=8, tile_cols=5,
                        dtype=np.float64, wires=WireSettings.of(w))
    gp, gn = cb.pos.conductance(), cb.neg.conductance()
    rt, ct = cb.row_tiles[1], cb.col_tiles[2]
    G = physical_tile(gp[ct, rt], gn[ct, rt], 0.0)
    C = combination(ct.stop - ct.start, "differential")
    Mt = TileCircuit(G, w, True).effective_matrix()
    bwd = (Mt @ C.T).T / (cb.current_factor() / (cb.per.v_read_V / cb.per.input_range))
    np.testing.assert_allclose(cb.read_operand((1, 2), transposed=True), bwd, rtol=1e-10)


def test_periphery_applies_after_the_ir_drop(W):
    card = cardfile("ecram_li_tang2018.yaml")
    w = WireSettings.of(Wires(3.0, 3.0, 20.0, 20.0))
    kw = dict(tile_rows=8, tile_cols=5, dtype=np.float64, wires=w)
    plain = CrossbarMatrix(W, card, np.random.default_rng(1), **kw)
    adc = CrossbarMatrix(W, card, np.random.default_rng(1), periphery=Periphery(adc_bits=6),
                         **kw)
    x = np.random.default_rng(2).uniform(-1, 1, (4, 21))
    a, b = adc.forward(x), plain.forward(x)
    assert 0 < np.abs(a - b).max() < 0.2 * np.abs(b).max()


def test_training_with_wires_reads_through_ir_drop_and_degrades_with_resistance(tmp_path):
    """Every read of the settling loop goes through the IR-drop maps: the free phase equals a
    NumPy settle built from the tiles' forward and transposed operands; resistive wires train
    and cost accuracy against negligible ones."""
    from dataclasses import replace

    from conftest import small_config

    from crossbar_ep.runs import train

    def cfg(r, refresh=1):
        return small_config(model={"hidden": [24, 16], "residual": "none"},
                            training={"optimizer": "sgd", "lr": 0.05, "epochs": 2},
                            crossbar={"enabled": True,
                                      "device": os.path.join(REPO, "device_models",
                                                             "ideal.yaml"),
                                      "tile_rows": 16, "tile_cols": 8,
                                      "wires": {"r_wire_row_ohm": r, "r_wire_col_ohm": r,
                                                "r_driver_ohm": 10 * r, "r_sense_ohm": 10 * r,
                                                "refresh_every": refresh}})
    run = train.start(cfg(50.0), str(tmp_path / "a"))
    st = run.learner.settler
    assert st.map.read_layers == {1, 2}
    xb = run.learner.pulses.crossbars

    def dense(cb, transposed):
        M = np.zeros((cb.n_in, cb.n_out))
        for i, rt in enumerate(cb.row_tiles):
            for j, ct in enumerate(cb.col_tiles):
                if transposed:
                    M[rt, ct] = cb.read_operand((i, j), True).T
                else:
                    M[rt, ct] = cb.read_operand((i, j))
        return M

    x = run.data.x_test[:5]
    net = run.net
    s1 = np.zeros((5, 24))
    s2 = np.zeros((5, 16))
    d = x @ dense(xb["W0"], False)
    (blk,) = st.map.inc[1]      # layer 1's one incoming block: layer 2 through W1 transposed
    assert blk.transposed and blk.src == 2 and blk.op == "W1"
    gain = blk.gain
    d = d + net.b.get(1, 0)
    for _ in range(st._n_steps(st.T)):
        h1 = d + gain * s2 @ dense(xb["W1"], True).T
        h2 = s1 @ dense(xb["W1"], False) + net.b.get(2, 0)
        s1, s2 = np.tanh(h1), np.tanh(h2)
    free = st.free(x.astype(net.dtype))
    np.testing.assert_allclose(free.s[2], s2, atol=1e-4)
    train.fit(run, progress=False)
    weak = train.start(cfg(1e-7), str(tmp_path / "b"))
    train.fit(weak, progress=False)
    ideal = train.start(replace(weak.cfg, crossbar=replace(weak.cfg.crossbar,
                                                            wires=WireSettings())),
                        str(tmp_path / "c"))
    train.fit(ideal, progress=False)
    for k in ideal.net.W:     # negligible wires: the ideal-wire run, nearly to rounding
        np.testing.assert_allclose(weak.net.W[k], ideal.net.W[k], atol=1e-6)
        assert np.abs(run.net.W[k] - ideal.net.W[k]).max() > 1e-4
    assert np.isfinite(run.history[-1]["test_loss"])
    assert 0 < weak.history[-1]["ir_drop_rel"] < 1e-5 < run.history[-1]["ir_drop_rel"] < 0.5
    assert "ir_drop_rel" not in ideal.history[-1]


def test_ir_drop_metric_grows_with_resistance(W):
    card = cardfile("ecram_li_tang2018.yaml")
    devs = []
    for r in (0.0, 1.0, 10.0, 100.0):
        cb = CrossbarMatrix(W, card, np.random.default_rng(1), tile_rows=8, tile_cols=5,
                            dtype=np.float64, wires=WireSettings.of(Wires(r, r, 10 * r, 10 * r)))
        d, w = cb.ir_drop_deviation()
        devs.append(np.sqrt(d / w))
    assert devs[0] == 0.0 and devs[1] < devs[2] < devs[3] < 1.0


def test_unchanged_tiles_are_not_solved_again(W):
    """Only tiles whose conductances changed are refreshed: an update confined to one tile
    solves that tile alone."""
    card = cardfile("ideal.yaml")
    cb = CrossbarMatrix(W, card, np.random.default_rng(1), tile_rows=8, tile_cols=5,
                        dtype=np.float64, wires=WireSettings.of(Wires(3.0, 3.0, 20.0, 20.0)))
    before = {k: ir.exact_solves for k, ir in cb.reader.circuits.items()}
    dW = np.zeros(W.shape)
    dW[6:9, 10:14] = 0.01                  # inside row tile 1 (inputs 8..15), col tile 1
    cb.apply_update(dW)
    changed = {k for k, ir in cb.reader.circuits.items() if ir.exact_solves > before[k]}
    assert changed == {(8, 5)}

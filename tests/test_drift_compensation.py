"""Drift compensation from calibration reads: the gain uses only what reads measure (checked
against a brute-force NumPy computation of the same reads, with part of the array rewritten
after calibration), the calibration reads cost energy and reach the metrics, and a state
without the recorded reference (the older layout) still loads."""

import numpy as np
import pytest
import yaml
from conftest import small_config
from scipy.linalg import hadamard

from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery
from crossbar_ep.crossbar.drift import reference_inputs
from crossbar_ep.crossbar.energy import EnergyMeter
from crossbar_ep.devices.card import load_card


def drift_card(tmp_path, nu_std=0.03):
    raw = {"name": "drifting", "model": "constant_step", "source": "test", "g_min_S": 1e-7,
           "g_max_S": 25e-6, "params": {"dw_min": 0.01, "w_min": -1.0, "w_max": 1.0},
           "drift": {"nu_mean": 0.1, "nu_std": nu_std, "t0_s": 20.0}}
    path = tmp_path / "drift.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


R = hadamard(32)[1:17, :24].astype(float)     # the 16 reference inputs of a 24-input array


def raw_weights(cb, drifted=True):
    """What the devices encode now (or as written), W = S (G+ - G-) / (G_max - G_min)."""
    gp, gn = (cb.pos.conductance(drifted), cb.neg.conductance(drifted))
    return cb.scale * (gp - gn) / (cb.card.g_max_S - cb.card.g_min_S)


def response(W):
    """The calibration read's per-line response sum_k |(R W^T)_kj|."""
    return np.abs(R @ W.T).sum(axis=0)


def test_reference_inputs_are_walsh_hadamard_rows():
    np.testing.assert_array_equal(reference_inputs(24, 1.0), R)
    np.testing.assert_array_equal(reference_inputs(24, 0.5), 0.5 * R)


@pytest.mark.parametrize("mode", ["global", "column"])
def test_gain_uses_only_what_the_calibration_reads_measure(tmp_path, mode):
    card = load_card(drift_card(tmp_path))
    W = 0.3 * np.random.default_rng(0).standard_normal((10, 24))
    cb = CrossbarMatrix(W, card, np.random.default_rng(1), tile_rows=8, tile_cols=5,
                        dtype=np.float64, drift_compensation=mode)
    c_ref = response(raw_weights(cb))               # recorded right after programming
    cb.advance(1000.0)
    n = np.zeros(W.shape, np.int64)
    n[:4, :12] = 25                                 # part of the array rewritten
    assert cb.write_pulses(n) > 0
    cb.advance(1000.0)
    raw = raw_weights(cb)
    c_now = response(raw)
    gain = np.full(10, c_ref.sum() / c_now.sum()) if mode == "global" else c_ref / c_now
    np.testing.assert_allclose(cb.W_eff, raw * gain[:, None], rtol=1e-9, atol=1e-12)
    # the former rule scaled by conductances no read can measure (the devices as written,
    # rewrites included): on the rewritten lines it differs from what the reads give
    gp0, gn0 = cb.pos.conductance(False), cb.neg.conductance(False)
    gp, gn = cb.pos.conductance(), cb.neg.conductance()
    old = (gp0 + gn0).sum(axis=1) / (gp + gn).sum(axis=1)
    if mode == "global":
        old = np.full(10, (gp0 + gn0).sum() / (gp + gn).sum())
    assert not np.allclose(gain[:4], old[:4], rtol=1e-3)
    # a new reference: the gain is 1 right after it
    cb.calibrate()
    np.testing.assert_allclose(cb.W_eff, raw, rtol=1e-12, atol=1e-15)


def test_one_drift_exponent_is_undone_exactly(tmp_path):
    card = load_card(drift_card(tmp_path, nu_std=0.0))
    W = 0.3 * np.random.default_rng(2).standard_normal((10, 24))
    for mode in ("global", "column"):
        cb = CrossbarMatrix(W, card, np.random.default_rng(1), dtype=np.float64,
                            drift_compensation=mode)
        W0 = cb.W_eff.copy()
        cb.advance(1e5)
        assert np.abs(raw_weights(cb)).sum() < 0.5 * np.abs(W0).sum()    # drifted away
        np.testing.assert_allclose(cb.W_eff, W0, rtol=1e-9, atol=1e-12)  # compensated


def test_calibration_reads_cost_energy_and_reach_the_metrics(tmp_path):
    card = load_card(drift_card(tmp_path))
    W = 0.3 * np.random.default_rng(0).standard_normal((10, 24))
    per = Periphery(dac_bits=7, adc_bits=9, e_dac_J=1e-12, e_adc_J=2e-12)
    cb = CrossbarMatrix(W, card, np.random.default_rng(1), periphery=per, tile_rows=8,
                        tile_cols=5, drift_compensation="column")
    meter = EnergyMeter()
    cb.observers.append(meter)
    before = cb.calibration_reads
    cb.advance(100.0)                               # one calibration read of 16 vectors
    assert cb.calibration_reads == before + 16
    assert meter.dac_conversions == 16 * 24 * 2     # 16 vectors x 24 rows x 2 column tiles
    assert meter.adc_conversions == 16 * 10 * 3     # x 10 outputs x 3 row tiles
    assert meter.array_J > 0
    plain = CrossbarMatrix(W, card, np.random.default_rng(1), periphery=per)
    plain.observers.append(EnergyMeter())
    plain.advance(100.0)
    assert plain.observers[0].dac_conversions == 0 and plain.calibration_reads == 0
    # in training: every update's refresh reads; the epoch metrics count the vectors
    from crossbar_ep.runs import train
    cfg = small_config(training={"epochs": 1, "optimizer": "sgd", "lr": 0.05},
                       crossbar={"enabled": True, "device": drift_card(tmp_path),
                                 "layers": ["W1"], "time_per_batch_s": 100.0,
                                 "drift_compensation": "global"})
    run = train.start(cfg, str(tmp_path / "run"))
    train.fit(run, progress=False)
    row = run.history[-1]
    assert row["calibration_reads_total"] == 8 * 16        # 8 batches, one read each
    assert row["crossbar"]["W1"]["calibration_reads"] == 8 * 16


def test_state_without_the_reference_loads(tmp_path):
    """The older layout has no ``calibration:reference``: the reference is then a calibration
    read of the devices as written, which for an array not rewritten since programming is the
    reference recorded then."""
    card = load_card(drift_card(tmp_path))
    W = 0.3 * np.random.default_rng(3).standard_normal((10, 24))
    kw = dict(dtype=np.float64, drift_compensation="column")
    a = CrossbarMatrix(W, card, np.random.default_rng(1), **kw)
    a.advance(5000.0)
    state = a.state_dict()
    assert "calibration:reference" in state and "calibration:reference" in a.optional_state
    old = {k: v for k, v in state.items() if not k.startswith("calibration:")}
    b = CrossbarMatrix(W, card, np.random.default_rng(1), **kw)
    b.load_state_dict(old)
    np.testing.assert_allclose(b.W_eff, a.W_eff, rtol=1e-9, atol=1e-12)
    c = CrossbarMatrix(W, card, np.random.default_rng(1), **kw)
    c.load_state_dict(state)
    np.testing.assert_array_equal(c.W_eff, a.W_eff)

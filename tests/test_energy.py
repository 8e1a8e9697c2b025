"""Energy of reads (against device-by-device sums and nodal read power), conversions,
programming pulses, and the per-epoch energy metrics."""

import os

import numpy as np
import pytest
from conftest import REPO, small_config

from crossbar_ep.circuit.ir_drop import WireSettings, combination, physical_tile, transposed_drive
from crossbar_ep.circuit.nodal import TileCircuit, Wires
from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery
from crossbar_ep.devices.card import load_card
from crossbar_ep.runs import train

ECRAM = os.path.join(REPO, "device_models", "ecram_li_tang2018.yaml")


def make(signed="differential", wires=Wires(), per=None):
    W = np.random.default_rng(0).uniform(-0.1, 0.1, (13, 21))
    return CrossbarMatrix(W, load_card(ECRAM), np.random.default_rng(1), signed=signed,
                          periphery=per or Periphery(dac_bits=7, v_read_V=0.3,
                                                     t_read_s=5e-9),
                          tile_rows=8, tile_cols=5, dtype=np.float64,
                          wires=WireSettings.of(wires))


def tiles(cb):
    gp = cb.pos.conductance()
    gn = None if cb.neg is None else cb.neg.conductance()
    g_ref = 0.5 * (cb.card.g_min_S + cb.card.g_max_S)
    for rt in cb.row_tiles:
        for ct in cb.col_tiles:
            yield rt, ct, physical_tile(gp[ct, rt], None if gn is None else gn[ct, rt], g_ref)


def volts(cb, v):
    return np.asarray(cb.reader.dac.drive(v), float) * cb.per.v_read_V / cb.per.input_range


@pytest.mark.parametrize("signed", ["differential", "reference"])
def test_read_energy_is_the_sum_over_devices_of_G_V2_t(signed):
    cb = make(signed)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-1, 1, (3, 21)), rng.uniform(-1, 1, (3, 13))
    Vx, Vy = volts(cb, x), volts(cb, y)
    fwd = bwd = 0.0
    for rt, ct, G in tiles(cb):
        for b in range(3):
            V = Vx[b, rt]
            fwd += sum(G[i, j] * V[i] ** 2 for i in range(G.shape[0]) for j in range(G.shape[1]))
            Vp = transposed_drive(Vy[b, ct], signed)   # +V / -V on a pair; reference at 0 V
            bwd += sum(G[i, j] * Vp[j] ** 2 for i in range(G.shape[0])
                       for j in range(G.shape[1]))
    E, dac, adc = cb.read_energy(x)
    assert E == pytest.approx(fwd * 5e-9, rel=1e-12)
    assert dac == 3 * 21 * len(cb.col_tiles) and adc == 3 * 13 * len(cb.row_tiles)
    E, dac, adc = cb.read_energy(y, transposed=True)
    assert E == pytest.approx(bwd * 5e-9, rel=1e-12)
    assert dac == 3 * 13 * len(cb.row_tiles) and adc == 3 * 21 * len(cb.col_tiles)


def test_read_energy_with_wires_is_the_nodal_read_power():
    w = Wires(20.0, 30.0, 200.0, 100.0)       # unequal terminals: both circuits solved
    cb = make(wires=w)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-1, 1, (2, 21)), rng.uniform(-1, 1, (2, 13))
    Vx, Vy = volts(cb, x), volts(cb, y)
    fwd = bwd = 0.0
    for rt, ct, G in tiles(cb):
        C = combination(ct.stop - ct.start, "differential")
        for b in range(2):
            fwd += TileCircuit(G, w).read_power(Vx[b, rt])
            bwd += TileCircuit(G, w, True).read_power(C.T @ Vy[b, ct])
    assert cb.read_energy(x)[0] == pytest.approx(fwd * 5e-9, rel=1e-9)
    assert cb.read_energy(y, transposed=True)[0] == pytest.approx(bwd * 5e-9, rel=1e-9)
    ideal = make().read_energy(x)[0]
    assert cb.read_energy(x)[0] < ideal       # the wires take part of the drive voltage


def test_programming_energy_per_pulse():
    cb = make()
    dW = np.random.default_rng(4).normal(0, 0.02, (13, 21))
    gp, gn = cb.pos.conductance().copy(), cb.neg.conductance().copy()
    cb.apply_update(dW, 31)
    n = np.abs(cb.last_counts)
    assert n.sum() > 0
    card = cb.card
    expect = card.write_voltage_V ** 2 * card.pulse_width_s * float((n * (gp + gn)).sum())
    assert cb.last_program_J == pytest.approx(expect, rel=1e-12)


def test_training_reports_energy_per_sample(tmp_path):
    cfg = small_config(training={"epochs": 1, "lr": 0.05, "optimizer": "sgd"},
                       crossbar={"enabled": True, "device": ECRAM, "tile_rows": 16,
                                 "tile_cols": 8,
                                 "periphery": {"dac_bits": 7, "adc_bits": 9,
                                               "e_dac_J": 1e-13, "e_adc_J": 2e-12}})
    run = train.start(cfg, str(tmp_path / "r"))
    train.fit(run, progress=False)
    row = run.history[-1]
    parts = [row[k] for k in ("energy_array_J", "energy_dac_J", "energy_adc_J",
                              "energy_program_J")]
    assert all(p > 0 for p in parts)
    assert row["energy_total_J"] == pytest.approx(sum(parts))
    # ADC energy per sample from the read count: every evaluation reads each array once
    T, K = cfg.training.T, cfg.training.K
    assert row["energy_adc_J"] > (T + K) * 2e-12 * 16

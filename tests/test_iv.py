"""Nonlinear device I-V laws in the reads: against device-by-device Newton solves of the
physical tiles, and the configuration rules."""

import os

import numpy as np
import pytest
from conftest import REPO, small_config

from crossbar_ep.circuit.ir_drop import combination, physical_tile
from crossbar_ep.circuit.iv import IVLaw
from crossbar_ep.circuit.nodal import TileCircuit, Wires
from crossbar_ep.config.experiment import ConfigError
from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery
from crossbar_ep.devices.card import load_card
from crossbar_ep.runs import train

ECRAM = os.path.join(REPO, "device_models", "ecram_li_tang2018.yaml")


@pytest.mark.parametrize("iv", [IVLaw("sinh", 0.1), IVLaw("polynomial", coeffs=(30.0, 200.0))])
def test_nonlinear_reads_equal_newton_solves_of_the_physical_tiles(iv):
    W = np.random.default_rng(0).uniform(-0.1, 0.1, (9, 14))
    per = Periphery(dac_bits=8, v_read_V=0.3)
    cb = CrossbarMatrix(W, load_card(ECRAM), np.random.default_rng(1), periphery=per,
                        tile_rows=8, tile_cols=5, dtype=np.float64, iv=iv)
    lin = CrossbarMatrix(W, load_card(ECRAM), np.random.default_rng(1), periphery=per,
                         tile_rows=8, tile_cols=5, dtype=np.float64)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-1, 1, (3, 14)), rng.uniform(-1, 1, (3, 9))
    k = per.v_read_V / per.input_range
    gp, gn = cb.pos.conductance(), cb.neg.conductance()
    fwd, bwd = np.zeros((3, 9)), np.zeros((3, 14))
    tiny = Wires(0.0, 0.0, 1e-9, 1e-9)          # ideal wires, terminals as 1 nohm resistors
    for rt in cb.row_tiles:
        for ct in cb.col_tiles:
            G = physical_tile(gp[ct, rt], gn[ct, rt], 0.0)
            C = combination(ct.stop - ct.start, "differential")
            for b in range(3):
                V = np.asarray(cb.dac(x[b:b + 1]))[0, rt] * k
                fwd[b, ct] += C @ TileCircuit(G, tiny).nonlinear_sensed_currents(V, iv)
                V = np.asarray(cb.dac(y[b:b + 1]))[0, ct] * k
                bwd[b, rt] += TileCircuit(G, tiny, True).nonlinear_sensed_currents(C.T @ V, iv)
    np.testing.assert_allclose(cb.forward(x), fwd / cb.current_factor(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cb.transposed(y), bwd / cb.current_factor(), rtol=1e-6,
                               atol=1e-9)
    assert np.abs(cb.forward(x) - lin.forward(x)).max() > 1e-3 * np.abs(lin.forward(x)).max()


def test_iv_law_functions():
    s = IVLaw("sinh", 0.2)
    V = np.linspace(-0.5, 0.5, 11)
    np.testing.assert_allclose(s.f(V), 0.2 * np.sinh(V / 0.2))
    np.testing.assert_allclose(s.df(V), np.cosh(V / 0.2))
    p = IVLaw("polynomial", coeffs=(2.0, 3.0))
    np.testing.assert_allclose(p.f(V), V + 2 * V ** 3 + 3 * V ** 5)
    h = 1e-6
    np.testing.assert_allclose(p.df(V), (p.f(V + h) - p.f(V - h)) / (2 * h), rtol=1e-6)
    assert IVLaw("polynomial").linear and not s.linear
    with pytest.raises(ValueError):
        IVLaw("cubic")


def test_nonlinear_law_trains_and_config_rules(tmp_path):
    xb = {"enabled": True, "device": ECRAM, "tile_rows": 16, "tile_cols": 8,
          "iv": {"law": "sinh", "v0_V": 0.1}}
    run = train.start(small_config(training={"epochs": 1}, crossbar=xb), str(tmp_path / "r"))
    assert run.learner.settler.map.read_layers == {1, 2}
    train.fit(run, progress=False)
    assert np.isfinite(run.history[-1]["test_loss"])
    with pytest.raises(ConfigError, match="crossbar.iv.law.*Newton"):
        small_config(crossbar={**xb, "wires": {"r_wire_row_ohm": 1.0}})
    with pytest.raises(ConfigError, match="differential"):
        small_config(crossbar={**xb, "signed": "reference"})

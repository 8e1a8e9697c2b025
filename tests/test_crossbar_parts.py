"""The crossbar array split by concern: pulse rules bound to one array, the keyword-only
options, the public accessors exporters and traces use, and older state dicts loading."""

import os

import numpy as np
import pytest
from conftest import REPO

from crossbar_ep.circuit.ir_drop import WireSettings
from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery
from crossbar_ep.crossbar.mixed_precision import MixedPrecision
from crossbar_ep.crossbar.pulses import DeterministicPulses, StochasticCoincidence
from crossbar_ep.crossbar.tiki_taka import TikiTaka
from crossbar_ep.devices.card import load_card

RPU = os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")


def _W(shape=(12, 9), seed=0):
    return 0.3 * np.random.default_rng(seed).standard_normal(shape)


def _signals(seed, n_out=12, n_in=9, B=6):
    rng = np.random.default_rng(seed)
    return rng.random((B, n_in)), 0.05 * rng.standard_normal((B, n_out))


def test_a_rule_binds_to_one_array_and_owns_its_state():
    card = load_card(RPU)
    rule = MixedPrecision(rng=np.random.default_rng(3))
    a = CrossbarMatrix(_W(), card, np.random.default_rng(1), tile_rows=4, tile_cols=5)
    b = CrossbarMatrix(_W(seed=1), card, np.random.default_rng(2), tile_rows=4, tile_cols=5)
    a.rule = rule
    b.rule = rule                       # a second array gets its own copy
    assert a.rule is rule and rule.array is a
    assert b.rule is not rule and b.rule.array is b and b.rule.rng is rule.rng
    assert b.rule.settings is rule.settings
    assert a.rule.state["chi"] is not b.rule.state["chi"]
    a.lr = b.lr = 0.7
    pre, delta = _signals(4)
    a.update(pre, 30 * delta, 0.5)
    assert np.abs(a.rule.state["chi"]).max() > 0 and not b.rule.state["chi"].any()
    assert a.state_dict()["rule:chi"] is a.rule.state["chi"]
    assert a.rule_state is a.rule.state and "accumulator_rms" in a.rule_info
    rule.attach(a)                      # the older spelling: a no-op when already bound
    assert a.rule is rule
    with pytest.raises(RuntimeError, match="not bound"):
        MixedPrecision().apply(pre, delta, 1.0)


def test_keyword_options_equal_setting_attributes_afterwards():
    card = load_card(RPU)
    pre, delta = _signals(5)
    arrays = []
    for kw in (True, False):
        rule = StochasticCoincidence(rng=np.random.default_rng(7), bl=31)
        if kw:
            cb = CrossbarMatrix(_W(), card, np.random.default_rng(1), rule=rule, lr=0.3,
                                seconds_per_update=2.0, drift_compensation="global")
        else:
            cb = CrossbarMatrix(_W(), card, np.random.default_rng(1))
            cb.rule, cb.lr, cb.seconds_per_update = rule, 0.3, 2.0
            cb.drift_compensation = "global"
        cb.update(pre, delta, 1.0)
        arrays.append(cb)
    a, b = arrays
    assert a.last_counts.any()
    np.testing.assert_array_equal(a.last_counts, b.last_counts)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    with pytest.raises(ValueError, match="drift compensation 'half'"):
        CrossbarMatrix(_W(), card, np.random.default_rng(1), drift_compensation="half")


def test_each_update_records_what_it_wrote():
    card = load_card(RPU)
    cb = CrossbarMatrix(_W(), card, np.random.default_rng(1), rule=DeterministicPulses(),
                        lr=0.5)
    seen = []

    class Obs:
        def on_read(self, *a):
            pass

        def on_update(self, op, info):
            seen.append(info)

    cb.observers.append(Obs())
    pre, delta = _signals(6)
    cb.update(pre, delta, 1.0)
    info = seen[-1]
    assert info is cb.last_write and info["counts"] is cb.last_counts
    assert info["pulses"] == int(np.abs(cb.last_counts).sum() * 2)    # a pair per weight
    assert info["program_J"] == cb.last_program_J > 0


def test_tiki_taka_fast_array_belongs_to_its_rule():
    card = load_card(RPU)
    cb = CrossbarMatrix(_W(), card, np.random.default_rng(1), tile_rows=4, tile_cols=5,
                        rule=TikiTaka(rng=np.random.default_rng(2), transfer_columns=2), lr=0.5)
    fast = cb.rule.state["fast"]
    assert isinstance(fast, CrossbarMatrix) and fast is not cb
    assert fast.tiling.tile_rows == 4 and fast.tiling.tile_cols == 5
    assert "rule:fast:pos:w" in cb.state_dict()


def test_public_accessors_give_what_the_reads_use():
    card = load_card(os.path.join(REPO, "device_models", "ecram_li_tang2018.yaml"))
    W = _W((13, 21))
    plain = CrossbarMatrix(W, card, np.random.default_rng(1), tile_rows=8, tile_cols=5,
                           dtype=np.float64)
    assert plain.differential and not plain.has_wires
    gp, gn = plain.conductances()
    assert gp is plain.pos.conductance() and gn is plain.neg.conductance()
    assert [s for s, _ in plain.device_arrays()] == ["pos", "neg"]
    rt, ct = plain.row_tiles[1], plain.col_tiles[2]
    np.testing.assert_array_equal(plain.read_operand((1, 2)), plain.W_eff[ct, rt].T)
    np.testing.assert_array_equal(plain.read_operand((1, 2), True), plain.W_eff[ct, rt])
    with pytest.raises(IndexError, match="out of range"):
        plain.read_operand((3, 0))
    ref = CrossbarMatrix(W, card, np.random.default_rng(1), signed="reference")
    assert not ref.differential and ref.conductances()[1] is None
    wired = CrossbarMatrix(W, card, np.random.default_rng(1), tile_rows=8, tile_cols=5,
                           dtype=np.float64, wires=WireSettings(r_wire_row_ohm=5.0,
                                                                r_wire_col_ohm=5.0))
    assert wired.has_wires
    x = np.random.default_rng(3).uniform(-1, 1, (4, 21))
    out = np.zeros((4, 13))                         # the reads are the operands' products
    for i, rt in enumerate(wired.row_tiles):
        for j, ct in enumerate(wired.col_tiles):
            out[:, ct] += x[:, rt] @ wired.read_operand((i, j))
    np.testing.assert_allclose(wired.forward(x), out, rtol=1e-12)
    per = Periphery(dac_bits=5)
    q = CrossbarMatrix(W, card, np.random.default_rng(1), periphery=per)
    np.testing.assert_allclose(q.dac(x), np.rint(np.clip(x, -1, 1) * 15) / 15, atol=1e-6)


def test_a_state_dict_in_the_older_layout_loads():
    """The layout checkpoints have held since the device clock: ``{side}:w``,
    ``{side}:write_noise``, ``{side}:t_written``, ``{side}:t_now`` and the rule's
    ``rule:<key>``; an older one without ``t_now`` keeps the clock."""
    card = load_card(RPU)
    src = CrossbarMatrix(_W(), card, np.random.default_rng(1), rule=MixedPrecision(), lr=0.7)
    pre, delta = _signals(8)
    src.update(pre, 30 * delta, 0.5)
    old = {}
    for side, dev in (("pos", src.pos), ("neg", src.neg)):
        old.update({f"{side}:w": dev.w.copy(), f"{side}:write_noise": dev.write_noise.copy(),
                    f"{side}:t_written": dev.t_written.copy()})
    old["rule:chi"] = src.rule.state["chi"].copy()
    dst = CrossbarMatrix(_W(), card, np.random.default_rng(1), rule=MixedPrecision(), lr=0.7)
    assert not np.array_equal(dst.W_eff, src.W_eff)
    dst.pos.t_now = dst.neg.t_now = 7.0
    dst.load_state_dict(old)
    np.testing.assert_array_equal(dst.W_eff, src.W_eff)
    np.testing.assert_array_equal(dst.rule.state["chi"], src.rule.state["chi"])
    assert dst.t_now == 7.0

"""Crossbar mapping, tiling, forward / transposed reads, periphery and pulse counts."""

import os
from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO

from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery, quantize
from crossbar_ep.devices.card import load_card


def cardfile(name):
    return load_card(os.path.join(REPO, "device_models", name))


@pytest.fixture
def W():
    return np.random.default_rng(0).uniform(-0.1, 0.1, (37, 53))


@pytest.mark.parametrize("signed", ["differential", "reference"])
def test_ideal_card_maps_exactly(W, signed):
    cb = CrossbarMatrix(W, cardfile("ideal.yaml"), np.random.default_rng(1), signed=signed,
                        tile_rows=16, tile_cols=8, dtype=np.float64)
    np.testing.assert_allclose(cb.W_eff, W, atol=1e-14)
    x = np.random.default_rng(2).uniform(-1, 1, (5, 53))
    y = np.random.default_rng(3).uniform(-1, 1, (5, 37))
    np.testing.assert_allclose(cb.forward(x), x @ W.T, atol=1e-13)
    np.testing.assert_allclose(cb.transposed(y), y @ W, atol=1e-13)
    dW = np.random.default_rng(4).normal(0, 0.01, W.shape)
    assert cb.apply_update(dW) == 0
    np.testing.assert_allclose(cb.W_eff, W + dW, atol=1e-13)


def test_transposed_read_is_transpose_of_forward(W):
    cb = CrossbarMatrix(W, cardfile("reram_gong2018_exp.yaml"), np.random.default_rng(1),
                        dtype=np.float64)
    assert not np.allclose(cb.W_eff, W, atol=1e-3)      # real devices: programming differs
    eye_in, eye_out = np.eye(53), np.eye(37)
    M_fwd = cb.forward(eye_in).T                         # columns of the forward map
    M_bwd = cb.transposed(eye_out)                       # rows of the transposed map
    np.testing.assert_allclose(M_bwd, M_fwd, atol=1e-12)


def test_tiling_matches_one_array_with_ideal_periphery(W):
    card = cardfile("ecram_li_tang2018.yaml")
    big = CrossbarMatrix(W, card, np.random.default_rng(5), tile_rows=1000, tile_cols=1000,
                         dtype=np.float64)
    small = CrossbarMatrix(W, card, np.random.default_rng(5), tile_rows=7, tile_cols=5,
                           dtype=np.float64)
    assert len(small.row_tiles) == 8 and len(small.col_tiles) == 8
    x = np.random.default_rng(6).uniform(-1, 1, (4, 53))
    np.testing.assert_allclose(small.forward(x), big.forward(x), atol=1e-12)
    # tiled summation path (force it with a no-op ADC resolution) agrees too
    fine = Periphery(adc_bits=48, adc_range=10.0)
    tiled = CrossbarMatrix(W, card, np.random.default_rng(5), periphery=fine, tile_rows=7,
                           tile_cols=5, dtype=np.float64)
    np.testing.assert_allclose(tiled.forward(x), big.forward(x), atol=1e-9)


def test_quantizer_levels_and_clipping():
    x = np.linspace(-2, 2, 1001)
    q = quantize(x.copy(), 3, 1.0)                       # 3 levels per sign
    np.testing.assert_allclose(np.unique(q), [-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1], atol=1e-12)
    assert np.all(np.abs(q - np.clip(x, -1, 1)) <= 1 / 6 + 1e-12)


def test_dac_adc_effects(W):
    card = cardfile("ideal.yaml")
    x = np.random.default_rng(7).uniform(-1.0, 1.0, (200, 53))
    per = Periphery(dac_bits=7, adc_bits=9, input_range=1.0)
    cb = CrossbarMatrix(W, card, np.random.default_rng(1), periphery=per, tile_rows=64,
                        tile_cols=64, dtype=np.float64)
    exact = x @ W.T
    err = cb.forward(x) - exact
    assert 0 < np.abs(err).max() < 0.03 * np.abs(exact).max()
    # the DAC clips inputs beyond the input range
    dac_only = CrossbarMatrix(W, card, np.random.default_rng(1),
                              periphery=Periphery(dac_bits=12), dtype=np.float64)
    big = 3.0 * x
    np.testing.assert_allclose(dac_only.forward(big), np.clip(big, -1, 1) @ W.T, atol=5e-3)
    # a fixed ADC range clips large outputs
    tight = CrossbarMatrix(W, card, np.random.default_rng(1),
                           periphery=Periphery(adc_bits=9, adc_range=0.05), dtype=np.float64)
    assert np.abs(tight.forward(x)).max() <= 0.05 + 1e-12


def test_read_noise_redrawn_each_read(W):
    card = cardfile("ideal.yaml")
    x = np.ones((1, 53))
    for mode, std in (("output", 0.02), ("device", 0.05)):
        cb = CrossbarMatrix(W, card, np.random.default_rng(1),
                            periphery=Periphery(read_noise=std, read_noise_mode=mode),
                            dtype=np.float64)
        reads = np.array([cb.forward(x)[0] for _ in range(400)])
        assert not np.allclose(reads[0], reads[1])
        np.testing.assert_allclose(reads.mean(0), (x @ W.T)[0], atol=5 * reads.std(0).max() / 20)


def test_deterministic_pulse_counts():
    W = np.zeros((50, 40))
    cb = CrossbarMatrix(W + 0.05, cardfile("rpu_gokmen2016.yaml"), np.random.default_rng(1))
    step_w = cb.card.params["dw_min"] / (cb.card.w_max - cb.card.w_min) * 2 * cb.scale
    dW = np.full(W.shape, 3.3 * step_w)                  # 3.3 device steps
    n = np.array([cb.pulse_counts(dW) for _ in range(200)])
    assert set(np.unique(n)) == {3, 4}
    assert n.mean() == pytest.approx(3.3, abs=0.02)       # stochastic rounding is unbiased
    assert np.all(cb.pulse_counts(dW * 100, max_pulses=5) == 5)
    assert np.all(cb.pulse_counts(-dW * 100, max_pulses=5) == -5)
    fired = cb.apply_update(np.full(W.shape, 2 * step_w), max_pulses=10)
    assert fired == 2 * 2 * W.size                        # both devices of every pair


class _Probe:
    """A traces probe stand-in: recording a tile sends its read down the tile-by-tile path."""
    samples = 1

    def record(self, *args):
        pass


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("blocked", [False, True])
def test_fused_tile_reads_equal_tile_by_tile_reads(W, transposed, accumulate, blocked,
                                                   monkeypatch):
    """The one-GEMM-per-tile-row read (noise streams, per-tile ADC, partial sums) equals the
    tile-by-tile read, and with noise off a NumPy per-tile quantiser; also when a large read
    is done in blocks of rows (blocks of 16, 16 and 8 of the 40 rows here)."""
    import crossbar_ep.crossbar.reader as reader_module
    if blocked:
        monkeypatch.setattr(reader_module, "SENSE_BLOCK_BYTES", 1)
        monkeypatch.setattr(reader_module, "BLOCKED_READ_BYTES", 0)
    card = cardfile("ecram_li_tang2018.yaml")
    per = Periphery(dac_bits=7, adc_bits=9, read_noise=0.02)
    v = np.random.default_rng(8).uniform(-1, 1, (40, 37 if transposed else 53))
    start = np.random.default_rng(9).normal(size=(40, 53 if transposed else 37))
    outs = []
    for probe in (None, _Probe()):
        cb = CrossbarMatrix(W, card, np.random.default_rng(5), periphery=per, tile_rows=16,
                            tile_cols=8, dtype=np.float64)
        if probe is not None:
            cb.watch_tile((2, 3), probe)
        out = start.copy()
        cb.read_into(v, out, 0.5, accumulate, transposed)
        outs.append(out)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    assert not np.allclose(outs[0], start if accumulate else 0.0)
    # noise off: sum over tiles of gain * ADC(tile part) with each tile's own full scale
    per0 = Periphery(dac_bits=7, adc_bits=9)
    cb = CrossbarMatrix(W, card, np.random.default_rng(5), periphery=per0, tile_rows=16,
                        tile_cols=8, dtype=np.float64)
    vq = quantize(v.copy(), 7, 1.0)
    ref = start.copy() if accumulate else np.zeros_like(start)
    ranges = cb.bwd_range if transposed else cb.fwd_range
    for rt in cb.row_tiles:
        for ct in cb.col_tiles:
            Wt = cb.W_eff[ct, rt]
            if transposed:
                ref[:, rt] += 0.5 * quantize(vq[:, ct] @ Wt, 9, ranges[(rt.start, ct.start)])
            else:
                ref[:, ct] += 0.5 * quantize(vq[:, rt] @ Wt.T, 9, ranges[(rt.start, ct.start)])
    out = start.copy()
    cb.read_into(v, out, 0.5, accumulate, transposed)
    np.testing.assert_allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_abs_max_input_scaling_matches_numpy_reference(W, transposed, accumulate):
    """periphery.input_scaling abs_max (noise management): each row is scaled by its largest
    |entry| to the DAC full scale, read through the DAC and the per-tile ADCs, and the output
    scaled back; checked against a NumPy quantiser with the noise off."""
    card = cardfile("ecram_li_tang2018.yaml")
    per = Periphery(dac_bits=7, adc_bits=9, input_scaling="abs_max")
    cb = CrossbarMatrix(W, card, np.random.default_rng(5), periphery=per, tile_rows=16,
                        tile_cols=8, dtype=np.float64)
    rng = np.random.default_rng(8)
    v = rng.uniform(-1, 1, (40, 37 if transposed else 53)) * rng.uniform(1e-4, 2.0, (40, 1))
    v[3] = 0.0                                            # an all-zero row reads zero
    start = rng.normal(size=(40, 53 if transposed else 37))
    a = np.abs(v).max(axis=1, keepdims=True)
    a[a == 0] = 1.0
    vq = quantize(v / a, 7, 1.0)
    ranges = cb.bwd_range if transposed else cb.fwd_range
    part = np.zeros_like(start)
    for rt in cb.row_tiles:
        for ct in cb.col_tiles:
            Wt, r = cb.W_eff[ct, rt], ranges[(rt.start, ct.start)]
            if transposed:
                part[:, rt] += 0.5 * quantize(vq[:, ct] @ Wt, 9, r)
            else:
                part[:, ct] += 0.5 * quantize(vq[:, rt] @ Wt.T, 9, r)
    ref = (start if accumulate else 0.0) + a * part
    out = start.copy()
    cb.read_into(v, out, 0.5, accumulate, transposed)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    np.testing.assert_array_equal(out[3], start[3] if accumulate else 0.0)


def test_abs_max_scaling_keeps_small_inputs_and_scales_their_noise(W):
    """A small input (an output error of 1e-3) falls below half a 7-bit DAC step and reads
    as zero without scaling; with abs_max it reads as x @ W^T to the converters' precision,
    and reading c x gives exactly c times the read of x, read noise included (same noise
    stream): the noise shrinks with the input."""
    card = cardfile("ideal.yaml")
    x = 1e-3 * np.random.default_rng(7).uniform(-1, 1, (6, 53))
    plain = CrossbarMatrix(W, card, np.random.default_rng(1),
                           periphery=Periphery(dac_bits=7, adc_bits=9), dtype=np.float64)
    assert np.all(plain.forward(x) == 0.0)
    per = Periphery(dac_bits=7, adc_bits=9, input_scaling="abs_max")
    cb = CrossbarMatrix(W, card, np.random.default_rng(1), periphery=per, dtype=np.float64)
    exact = x @ W.T
    assert np.abs(cb.forward(x) - exact).max() < 0.03 * np.abs(exact).max()
    noisy = replace(per, read_noise=0.02)
    reads = [CrossbarMatrix(W, card, np.random.default_rng(1), periphery=noisy,
                            dtype=np.float64).forward(c * x) for c in (1.0, 50.0)]
    np.testing.assert_allclose(reads[1], 50.0 * reads[0], rtol=1e-10, atol=1e-15)
    # noise bounded at 4.9 sigma of 0.02 x max|x| (unscaled it would be 0.02 x 4.9)
    assert np.abs(reads[0] - exact).max() < 4.9 * 0.02 * 1e-3 + 0.03 * np.abs(exact).max()

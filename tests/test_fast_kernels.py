"""Crossbar Numba kernels against NumPy references; the counter-based generator's moments."""

import numpy as np
import pytest

from crossbar_ep import fastrng
from crossbar_ep.crossbar.array import dac_kernel, quantize, sense_accumulate


def test_fast_normal_moments_and_determinism():
    a = np.empty(400_000)
    fastrng.fill_normal(a, 42)
    assert abs(a.mean()) < 5 / np.sqrt(a.size)
    assert a.var() == pytest.approx(1.0, rel=0.01)
    assert ((a / a.std()) ** 4).mean() == pytest.approx(3 - 1.2 / 8, abs=0.03)  # Irwin-Hall 8
    assert np.abs(a).max() <= np.sqrt(12 / 8) * 4 + 1e-9
    b = np.empty_like(a)
    fastrng.fill_normal(b, 42)
    np.testing.assert_array_equal(a, b)
    fastrng.fill_normal(b, 43)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dac_and_adc_kernels_match_numpy(dtype):
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (33, 70)).astype(dtype)
    out = np.empty_like(x)
    dac_kernel(x, out, dtype(1.0 / 63), dtype(63))
    np.testing.assert_allclose(out, quantize(x.copy(), 7, 1.0), atol=1e-6)
    part = rng.uniform(-3, 3, (33, 40)).astype(dtype)
    acc = rng.normal(size=(33, 70)).astype(dtype)          # layer buffer; tile at columns 20:60
    ref = acc.copy()
    ref[:, 20:60] += 0.5 * quantize(part.copy(), 9, 2.0)
    sense_accumulate(acc, 20, part, dtype(0.5), dtype(0.0), dtype(2.0 / 255), dtype(255), 7)
    np.testing.assert_allclose(acc, ref, atol=1e-5)
    # noise only: adds a zero-mean perturbation of the requested std, only in the tile
    acc2 = np.zeros((200, 70), dtype)
    sense_accumulate(acc2, 30, np.zeros((200, 40), dtype), dtype(1.0), dtype(0.5), dtype(0.0),
                     dtype(0), 9)
    assert not acc2[:, :30].any() and not acc2[:, 70:].any()
    assert abs(acc2[:, 30:].mean()) < 0.02
    assert acc2[:, 30:].std() == pytest.approx(0.5, rel=0.05)
    # the sense amplifiers' noise is the 32-bit lane stream of the read's seed, row by row
    acc4 = np.zeros((7, 40), dtype)
    sense_accumulate(acc4, 0, np.zeros((7, 40), dtype), dtype(1.0), dtype(0.25), dtype(0.0),
                     dtype(0), 11)
    lanes = np.empty((7, 40), np.float32)
    fastrng.fill_normal_lanes32(lanes, 11)
    np.testing.assert_allclose(acc4, 0.25 * lanes, rtol=1e-6)
    # no noise, no ADC: plain gain * part
    acc3 = np.zeros((33, 40), dtype)
    sense_accumulate(acc3, 0, part, dtype(2.0), dtype(0.0), dtype(0.0), dtype(0), 1)
    np.testing.assert_allclose(acc3, 2.0 * part, rtol=1e-6)


@pytest.mark.parametrize("fill, bound", [
    (fastrng.fill_normal_lanes, np.sqrt(12 / 8) * 4),                 # 8 bytes
    (fastrng.fill_normal_lanes32, 60 / np.sqrt(8 * 255 / 12))])      # 8 nibbles
def test_lane_normal_moments_independence_and_determinism(fill, bound):
    a = np.empty((2000, 256), np.float32)
    fill(a, 5)
    assert abs(a.mean()) < 5 / np.sqrt(a.size)
    assert a.var() == pytest.approx(1.0, rel=0.01)
    assert ((a / a.std()) ** 4).mean() == pytest.approx(3 - 1.2 / 8, abs=0.03)  # Irwin-Hall 8
    assert np.abs(a).max() <= bound + 1e-6
    # even and odd rows (successive draws of each lane) uncorrelated
    assert abs(np.corrcoef(a[0::2].ravel(), a[1::2].ravel())[0, 1]) < 5 / np.sqrt(a.size / 2)
    # no correlation between successive samples of a lane, neighbouring lanes, or seeds
    n = a.size
    for u, v in [(a[1:], a[:-1]), (a[:, 1:], a[:, :-1])]:
        assert abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]) < 5 / np.sqrt(n)
        # nor of their magnitudes (a linear generator's structure shows in higher moments)
        assert abs(np.corrcoef(u.ravel() ** 2, v.ravel() ** 2)[0, 1]) < 5 / np.sqrt(n)
    b = np.empty_like(a)
    fill(b, 5)
    np.testing.assert_array_equal(a, b)
    fill(b, 6)
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(n)
    # per-lane histograms agree with the pooled one (no lane is biased)
    assert np.abs(a.mean(axis=0)).max() < 5 / np.sqrt(a.shape[0])

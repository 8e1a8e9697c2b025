"""Crossbar Numba kernels against NumPy references; the counter-based generator's moments."""

import numpy as np
import pytest

from crossbar_ep import fastrng
from crossbar_ep.crossbar import dac_kernel, quantize, sense_accumulate


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
    acc = rng.normal(size=(33, 40)).astype(dtype)
    ref = acc + quantize(part.copy(), 9, 2.0)
    sense_accumulate(acc, part, dtype(0.0), dtype(2.0 / 255), dtype(255), 7)
    np.testing.assert_allclose(acc, ref, atol=1e-5)
    # noise only: adds a zero-mean perturbation of the requested std
    acc2 = np.zeros((33, 40), dtype)
    sense_accumulate(acc2, np.zeros_like(part), dtype(0.5), dtype(0.0), dtype(0), 9)
    assert abs(acc2.mean()) < 0.05
    assert acc2.std() == pytest.approx(0.5, rel=0.1)

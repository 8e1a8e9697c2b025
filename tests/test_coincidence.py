"""Stochastic pulse coincidence: bit streams, AND + popcount counting, and their statistics."""

import numpy as np
import pytest

from crossbar_ep.crossbar.pulses import binomial_reference, bit_streams, coincidences


def unpack(streams, bl):
    """(B, words, n) uint64 -> (B, n, bl) bools, slot t = bit t % 64 of word t // 64."""
    B, words, n = streams.shape
    bits = np.zeros((B, n, words * 64), bool)
    for w in range(words):
        for t in range(64):
            bits[:, :, w * 64 + t] = (streams[:, w, :] >> np.uint64(t)) & np.uint64(1)
    assert not bits[:, :, bl:].any(), "slots beyond bl must be empty"
    return bits[:, :, :bl]


@pytest.mark.parametrize("bl", [10, 64, 100])
def test_bit_streams_fire_with_probability_p(bl):
    P = np.tile(np.array([0.0, 1e-3, 0.1, 0.37, 0.9, 1.0]), (4000, 1))
    bits = unpack(bit_streams(P, bl, 11), bl)
    freq = bits.mean(axis=(0, 2))
    n = bits.shape[0] * bl
    sd = np.sqrt(P[0] * (1 - P[0]) / n)
    assert np.all(np.abs(freq - P[0]) <= 5 * sd + 1e-12)
    assert freq[0] == 0.0 and freq[-1] == 1.0
    # slots are independent: the count per stream has the Binomial(bl, p) variance
    counts = bits.sum(axis=2)
    for c, p in zip(counts.T[2:5], P[0, 2:5]):
        assert c.var() == pytest.approx(bl * p * (1 - p), rel=0.1)
    # adjacent slots uncorrelated
    a, b = bits[:, 3, :-1].ravel(), bits[:, 3, 1:].ravel()
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)


def test_coincidences_equal_brute_force_count():
    rng = np.random.default_rng(1)
    B, n_in, n_out, bl = 5, 9, 7, 70
    rows = bit_streams(rng.random((B, n_in)), bl, 3)
    cols = bit_streams(rng.random((B, n_out)), bl, 4)
    sx = rng.choice([-1, 0, 1], (B, n_in)).astype(np.int64)
    sd = rng.choice([-1, 1], (B, n_out)).astype(np.int64)
    got = coincidences(rows, sx, cols, sd)
    r, c = unpack(rows, bl), unpack(cols, bl)
    ref = np.einsum("bi,bj,bjt,bit->ij", sd, sx, r.astype(int), c.astype(int))
    np.testing.assert_array_equal(got, ref)


def test_per_device_count_is_binomial_like_independent_draws():
    """One sample: device (i, j) counts Binomial(bl, p_j q_i) coincidences, the same law as
    independent per-device draws (mean and variance)."""
    bl, trials = 31, 20000
    p = np.array([[0.2, 0.7]])
    q = np.array([[0.5, 0.05, 0.9]])
    one = np.ones((1, 2), np.int64), np.ones((1, 3), np.int64)
    got = np.array([coincidences(bit_streams(p, bl, 2 * t), one[0],
                                 bit_streams(q, bl, 2 * t + 1), one[1])
                    for t in range(trials)], float)
    ref = np.array([binomial_reference(p, one[0], q, one[1], bl, t) for t in range(trials)],
                   float)
    r = q[0][:, None] * p[0][None, :]
    for draws in (got, ref):
        mean_sd = np.sqrt(bl * r * (1 - r) / trials)
        assert np.all(np.abs(draws.mean(0) - bl * r) <= 5 * mean_sd)
        np.testing.assert_allclose(draws.var(0), bl * r * (1 - r), rtol=0.08)

"""Hardware-aware training (training.weight_noise_*): the card-derived weight noise equals the
spread of weights actually programmed onto arrays of the card; noisy phases, clean updates;
reproducible and exactly resumable runs."""

import numpy as np
import pytest
from conftest import small_config

from crossbar_ep.config.build import card_weight_sigma
from crossbar_ep.crossbar.array import CrossbarMatrix
from crossbar_ep.devices.card import load_card
from crossbar_ep.model.network import make_network
from crossbar_ep.model.weight_noise import WeightNoise
from crossbar_ep.runs import train


@pytest.mark.parametrize("card_name", ["pcm_joshi2020_inference", "pcm_nandakumar2020"])
def test_card_sigma_matches_the_spread_of_programmed_arrays(card_name):
    """Program the same W onto 400 arrays of the card (programming noise from their seeds,
    no read noise at t = 0): the per-weight std of the weights read equals the formula."""
    card = load_card(card_name)
    rng = np.random.default_rng(0)
    W = rng.uniform(-1, 1, (6, 5))
    sigma = card_weight_sigma(card, 2.0)(W)
    reads = np.array([CrossbarMatrix(W, card, np.random.default_rng(s), dtype=np.float64,
                                     weight_range_factor=2.0).dense()
                      for s in range(400)])
    np.testing.assert_allclose(reads.mean(axis=0), W, atol=4 * sigma.max() / np.sqrt(400))
    np.testing.assert_allclose(reads.std(axis=0), sigma, rtol=0.15)


def test_noise_perturbs_the_phases_and_restores_the_weights():
    net = make_network((8, 6, 3), 0, dtype="float64")
    clean = net.ops["W0"].W.copy()
    wn = WeightNoise(3, additive=0.1, multiplicative=0.2)
    wn.perturb(net, 5)
    noisy = net.ops["W0"].W.copy()
    d = noisy - clean
    s = 0.1 * np.abs(clean).max() + 0.2 * np.abs(clean)
    assert 0.5 < np.std(d / s) < 1.5
    wn.restore(net)
    np.testing.assert_array_equal(net.ops["W0"].W, clean)
    wn.perturb(net, 5)                           # the same step draws the same noise
    np.testing.assert_array_equal(net.ops["W0"].W, noisy)
    wn.restore(net)


def test_noisy_training_is_reproducible_resumes_exactly_and_differs(tmp_path):
    def cfg(epochs, **t):
        return small_config(training={"epochs": epochs, "weight_noise_add": 0.05,
                                      "weight_noise_card": "pcm_joshi2020_inference", **t})
    a = train.start(cfg(2), str(tmp_path / "a"))
    train.fit(a, progress=False)
    part = train.start(cfg(1), str(tmp_path / "p"))
    train.fit(part, progress=False)
    resumed = train.resume(str(tmp_path / "p"), epochs=2)
    train.fit(resumed, progress=False)
    clean = train.start(small_config(training={"epochs": 2}), str(tmp_path / "c"))
    train.fit(clean, progress=False)
    for k in a.net.W:
        np.testing.assert_array_equal(a.net.W[k], resumed.net.W[k])
        assert not np.array_equal(a.net.W[k], clean.net.W[k])
    assert a.history[-1]["test_acc"] > 0.5


def test_weight_noise_is_for_ep_runs():
    from crossbar_ep.errors import ConfigError
    with pytest.raises(ConfigError, match="weight_noise"):
        small_config(training={"algorithm": "bp", "weight_noise_mul": 0.1})

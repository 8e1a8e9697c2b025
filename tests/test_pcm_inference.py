"""The PCM statistical card (device_models/pcm_joshi2020_inference.yaml) reproduces the
published PCM inference model (Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 2020):
the mean and standard deviation of G(t) after programming, drift and 1/f read noise, at six
times and 25 targets, against a plain NumPy sampler of the formulas written here."""

import os

import numpy as np
import pytest
from conftest import REPO

from crossbar_ep.crossbar.array import CrossbarMatrix
from crossbar_ep.devices import DeviceArray
from crossbar_ep.devices.card import load_card

CARD = os.path.join(REPO, "device_models", "pcm_joshi2020_inference.yaml")
G_MAX = 25e-6
DAY = 86400.0
TIMES = {"0": 0.0, "1 s": 1.0, "1 h": 3600.0, "1 d": DAY, "1 month": 365.25 * DAY / 12,
         "1 year": 365.25 * DAY}
TARGETS_uS = np.arange(1, 26)           # 1 .. 25 uS
N = 150_000                             # devices per target


def numpy_sampler(g_target: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    """G(t) (S) of devices programmed to g_target (S) at t = 0, by the published formulas."""
    x = g_target / G_MAX
    sigma_prog = (0.26348 + 1.9650 * x - 1.1731 * x ** 2) * 1e-6
    g_prog = np.maximum(g_target + sigma_prog * rng.standard_normal(g_target.shape), 0.0)
    mu = np.clip(-0.0155 * np.log(x) + 0.0244, 0.049, 0.1)
    sd = np.clip(-0.0125 * np.log(x) - 0.0059, 0.008, 0.045)
    nu = np.abs(mu + sd * rng.standard_normal(g_target.shape))
    g_drift = g_prog * ((t + 20.0) / 20.0) ** -nu
    t_read = 250e-9
    if t <= t_read:
        return g_drift
    q_s = np.minimum(0.0088 / x ** 0.65, 0.2)
    sigma_read = g_drift * q_s * np.sqrt(np.log((t + t_read) / (2 * t_read)))
    return g_drift + sigma_read * rng.standard_normal(g_target.shape)


def test_card_follows_the_published_statistics_at_every_time_and_target():
    card = load_card(CARD)
    targets = np.repeat(TARGETS_uS * 1e-6, N).reshape(TARGETS_uS.size, N)
    arr = DeviceArray(card, targets.shape, np.random.default_rng(1))
    arr.program((targets - card.g_min_S) / (card.g_max_S - card.g_min_S)
                * (card.w_max - card.w_min) + card.w_min)
    rng = np.random.default_rng(2)
    for label, t in TIMES.items():
        arr.advance(t - arr.t_now)
        g = arr.conductance()                        # (targets, N)
        ref = numpy_sampler(targets, t, rng)
        m, r = g.mean(axis=1), ref.mean(axis=1)
        s, rs = g.std(axis=1), ref.std(axis=1)
        dm, ds = np.abs(m / r - 1.0), np.abs(s / rs - 1.0)
        assert dm.max() < 0.01, (label, TARGETS_uS[dm.argmax()], dm.max())
        assert ds.max() < 0.03, (label, TARGETS_uS[ds.argmax()], ds.max())
        # the two samples' resolution: the standard error of the difference of the means,
        # at most 0.3 % (1 uS, 1 year: G's spread is 77 % of its mean), well inside 1 %
        assert np.all(np.sqrt(s ** 2 + rs ** 2) / np.sqrt(N) / r < 0.0033)


def test_the_statistics_move_as_the_laws_say():
    """Sanity on the shape: drift lowers the mean by the mean exponent, read noise widens the
    spread with ln t, both relative to the target."""
    card = load_card(CARD)
    arr = DeviceArray(card, (1, 200_000), np.random.default_rng(3))
    g_t = 10e-6
    arr.program(np.full(200_000, (g_t / G_MAX) * 2.0 - 1.0))
    g0 = arr.conductance().ravel()
    x = g_t / G_MAX
    assert g0.std() == pytest.approx((0.26348 + 1.9650 * x - 1.1731 * x ** 2) * 1e-6, rel=0.01)
    arr.advance(DAY)
    g1 = arr.conductance().ravel()
    mu = min(max(-0.0155 * np.log(x) + 0.0244, 0.049), 0.1)
    assert g1.mean() / g0.mean() == pytest.approx(((DAY + 20) / 20) ** -mu, rel=0.01)
    assert g1.std() > g0.std()


def test_crossbar_array_programs_and_ages_with_the_card():
    """The public evaluation path: program target weights (seeded programming noise), move
    the clock to a time after programming, read."""
    card = load_card(CARD)
    W = 0.5 * np.random.default_rng(4).uniform(-1, 1, (64, 96))
    a = CrossbarMatrix(W, card, np.random.default_rng(5), dtype=np.float64)
    b = CrossbarMatrix(W, card, np.random.default_rng(5), dtype=np.float64)
    np.testing.assert_array_equal(a.W_eff, b.W_eff)          # seeded: reproducible
    err0 = np.abs(a.W_eff - W).mean()
    assert 0 < err0 < 0.1 * np.abs(W).mean() * 10
    a.program(W, rng=np.random.default_rng(6))                # a fresh programming event
    assert not np.array_equal(a.W_eff, b.W_eff)
    assert a.age == 0.0
    a.advance_to(365.25 * DAY)
    assert a.age == pytest.approx(365.25 * DAY)
    shrink = np.sum(a.W_eff * W) / np.sum(W * W)       # drift shrinks the weights on average
    assert 0.4 < shrink < 0.8
    with pytest.raises(ValueError, match="only moves forward"):
        a.advance_to(DAY)


def test_training_on_the_card_resumes_exactly_and_older_states_load(tmp_path):
    """The programming targets and the present read-noise normals are part of the state: a
    run on the card resumed after epoch 1 equals the uninterrupted one; a state without them
    (the older layout) still loads."""
    from conftest import small_config

    from crossbar_ep.runs import train
    xb = {"enabled": True, "device": CARD, "layers": ["W1"], "time_per_batch_s": 600.0}
    tr = {"optimizer": "sgd", "lr": 0.05}
    full = train.start(small_config(training={**tr, "epochs": 2}, crossbar=xb),
                       str(tmp_path / "full"))
    train.fit(full, progress=False)
    part = train.start(small_config(training={**tr, "epochs": 1}, crossbar=xb),
                       str(tmp_path / "part"))
    train.fit(part, progress=False)
    resumed = train.resume(str(tmp_path / "part"), epochs=2)
    train.fit(resumed, progress=False)
    a, b = full.net.ops["W1"], resumed.net.ops["W1"]
    assert a.pos.read_xi.any() and a.t_now == b.t_now == 2 * 8 * 600.0
    np.testing.assert_array_equal(a.pos.conductance(), b.pos.conductance())
    np.testing.assert_array_equal(full.net.W["W1"], resumed.net.W["W1"])
    assert [h["test_acc"] for h in full.history] == [h["test_acc"] for h in resumed.history]
    state = {k: v for k, v in a.state_dict().items() if not k.endswith(("g_target", "read_xi"))}
    assert a.optional_state >= set(a.state_dict()) - set(state)
    b.load_state_dict(state)
    np.testing.assert_array_equal(b.pos.g_target, b.card.w_to_g(b.pos.w))
    assert not b.pos.read_xi.any()

"""Device laws (programming noise, drift, read noise) as registry classes: each against its
closed form written here, the card sections that name them (new and older spellings), and the
device arrays that apply them."""

import math
import os

import numpy as np
import pytest
from conftest import REPO

from crossbar_ep.devices import DeviceArray
from crossbar_ep.devices.card import card_from_dict, load_card
from crossbar_ep.devices.laws import LAWS, law_class, make_law
from crossbar_ep.errors import ConfigError

G = np.linspace(0.0, 40e-6, 81)          # conductances (S), 0 to 40 uS


def card(**sections):
    raw = {"name": "t", "model": "constant_step", "source": "test", "g_min_S": 0.0,
           "g_max_S": 25e-6, "params": {"dw_min": 0.001, "w_min": -1.0, "w_max": 1.0}}
    raw.update(sections)
    return card_from_dict(raw, "t.yaml")


# ---------------------------------------------------------------- closed forms
def test_programming_laws_match_their_closed_forms():
    x25, x40 = G / 25e-6, G / 40e-6
    pcm = np.maximum(0.26348 + 1.9650 * x25 - 1.1731 * x25 ** 2, 0.0) * 1e-6
    reram = np.maximum(0.348 + 16.030 * x40 - 43.853 * x40 ** 2 + 45.393 * x40 ** 3
                       - 16.815 * x40 ** 4, 0.0) * 1e-6
    np.testing.assert_array_equal(law_class("programming_noise", "none")().sigma_S(G), 0.0)
    np.testing.assert_array_equal(
        law_class("programming_noise", "constant")(std_S=3e-7).sigma_S(G), 3e-7)
    np.testing.assert_allclose(law_class("programming_noise", "pcm_nandakumar")().sigma_S(G),
                               pcm, rtol=1e-14, atol=0)
    np.testing.assert_allclose(law_class("programming_noise", "pcm_joshi2020")().sigma_S(G),
                               pcm, rtol=1e-14, atol=0)
    np.testing.assert_allclose(law_class("programming_noise", "reram_wan")().sigma_S(G),
                               reram, rtol=1e-14, atol=0)
    assert law_class("programming_noise", "pcm_joshi2020").clip_at_zero
    assert not law_class("programming_noise", "pcm_nandakumar").clip_at_zero


def test_drift_laws_match_their_closed_forms():
    xi = np.random.default_rng(0).standard_normal(G.size)
    p = law_class("drift", "power")(nu_mean=0.06, nu_std=0.02, t0_s=15.0)
    np.testing.assert_allclose(p.exponent(G, xi), np.abs(0.06 + 0.02 * xi), rtol=1e-15)
    dt = np.geomspace(1e-3, 3e8, G.size)
    nu = p.exponent(G, xi)
    np.testing.assert_allclose(p.factor(dt, nu), ((dt + 15.0) / 15.0) ** -nu, rtol=1e-14)
    x = np.maximum(G / 25e-6, 1e-12)
    mu = np.clip(-0.0155 * np.log(x) + 0.0244, 0.049, 0.1)
    sd = np.clip(-0.0125 * np.log(x) - 0.0059, 0.008, 0.045)
    for name in ("pcm_nandakumar", "pcm_joshi2020"):
        law = law_class("drift", name)()
        m, s = law.moments(G)
        np.testing.assert_allclose(m, mu, rtol=1e-14)
        np.testing.assert_allclose(s, sd, rtol=1e-14)
        np.testing.assert_allclose(law.exponent(G, xi), np.abs(mu + sd * xi), rtol=1e-14)
        assert law.t0_s == 20.0
    # the published clips: mu in [0.049, 0.1], sigma in [0.008, 0.045]
    assert mu.min() == 0.049 and mu.max() == 0.1 and sd.min() == 0.008 and sd.max() == 0.045
    assert law_class("drift", "pcm_nandakumar").basis == "written"
    assert law_class("drift", "pcm_joshi2020").basis == "target"


def test_read_noise_laws_match_their_closed_forms():
    dt = np.geomspace(1e-9, 3e8, G.size)
    g_now = 0.9 * G
    assert np.all(law_class("read_noise", "none")().sigma_S(G, g_now, dt) == 0.0)
    np.testing.assert_allclose(law_class("read_noise", "relative")(std_rel=0.03)
                               .sigma_S(G, g_now, dt), 0.03 * g_now, rtol=1e-15)
    law = law_class("read_noise", "pcm_joshi2020")()
    assert law.t_read_s == 250e-9
    x = np.maximum(G / 25e-6, 1e-300)
    q = np.minimum(0.0088 / x ** 0.65, 0.2)
    arg = np.log((dt + 250e-9) / (2 * 250e-9))
    expect = g_now * q * np.sqrt(np.where(arg > 0, arg, 0.0))
    np.testing.assert_allclose(law.sigma_S(G, g_now, dt), expect, rtol=1e-13)
    assert np.all(law.sigma_S(G, g_now, np.full(G.size, 100e-9)) == 0.0)   # dt < t_read
    # Q_s saturates at 0.2 below x = (0.0088 / 0.2)^(1 / 0.65) = 0.0082
    assert law.q_s(np.array([0.1e-6]))[0] == 0.2
    assert law.q_s(np.array([25e-6]))[0] == pytest.approx(0.0088)


def test_every_law_is_registered_under_its_kind():
    assert set(LAWS) == {"programming_noise", "drift", "read_noise"}
    for kind, laws in LAWS.items():
        for name, cls in laws.items():
            assert cls.kind == kind and cls.name == name and cls.summary


# ---------------------------------------------------------------- cards name the laws
def test_cards_name_laws_in_both_spellings():
    old = card(drift={"nu_model": "pcm_nandakumar", "t0_s": 20.0},
               programming_noise={"model": "reram_wan"})
    new = card(drift={"law": "pcm_nandakumar", "t0_s": 20.0},
               programming_noise={"law": "reram_wan"})
    for c in (old, new):
        assert type(make_law("drift", c.drift)).name == "pcm_nandakumar"
        assert type(make_law("programming_noise", c.programming_noise)).name == "reram_wan"
    power = card(drift={"nu_mean": 0.1, "nu_std": 0.02})
    law = make_law("drift", power.drift)
    assert (type(law).name, law.nu_mean, law.nu_std, law.t0_s) == ("power", 0.1, 0.02, 20.0)
    assert make_law("drift", card().drift) is None
    rn = card(read_noise={"law": "pcm_joshi2020", "t_read_s": 1e-6})
    assert make_law("read_noise", rn.read_noise).t_read_s == 1e-6
    assert not make_law("read_noise", card().read_noise).active


@pytest.mark.parametrize("section, match", [
    ({"drift": {"law": "pcm_nandakumr"}}, r"drift.law: unknown drift law .*did you mean "
                                          r"'pcm_nandakumar'"),
    ({"drift": {"law": "power", "t_read_s": 1.0}}, r"drift.t_read_s: not a parameter"),
    ({"drift": {"nu_mean": -0.1}}, r"drift.nu_mean: must not be negative"),
    ({"drift": {"law": "power", "nu_model": "power"}}, r"drift.nu_model: give the law once"),
    ({"programming_noise": {"model": "constant"}}, r"programming_noise.std_S: missing"),
    ({"programming_noise": {"model": "pcm_nandakumar", "std_S": 1e-7}},
     r"programming_noise.std_S: not a parameter of the programming_noise law"),
    ({"read_noise": {"law": "relative"}}, r"read_noise.std_rel: missing"),
    ({"read_noise": {"law": "pcm_joshi2020", "t_read_s": 0}}, r"read_noise.t_read_s: must be"),
    ({"read_noise": "pcm"}, r"read_noise: expected a mapping"),
])
def test_bad_law_sections_name_the_file_and_key(section, match):
    with pytest.raises(ConfigError, match=r"t.yaml: " + match):
        card(**section)


# ---------------------------------------------------------------- device arrays apply them
def test_device_array_programming_noise_follows_the_law():
    c = card(programming_noise={"law": "pcm_nandakumar"})
    arr = DeviceArray(c, (200, 200), np.random.default_rng(1))
    w = np.full(arr.w.size, 0.2)                    # g = 15 uS, x = 0.6
    arr.program(w)
    g = c.w_to_g(arr.w)
    x = 15e-6 / 25e-6
    sigma = (0.26348 + 1.9650 * x - 1.1731 * x ** 2) * 1e-6
    assert g.mean() == pytest.approx(15e-6, abs=4 * sigma / 200)
    assert g.std() == pytest.approx(sigma, rel=0.02)


def test_device_array_drift_and_read_noise_follow_the_laws():
    c = card(drift={"law": "power", "nu_mean": 0.05, "nu_std": 0.01},
             read_noise={"law": "relative", "std_rel": 0.02})
    arr = DeviceArray(c, (300, 300), np.random.default_rng(2), w_init=0.5)
    g0 = arr.conductance()
    assert np.all(g0 == c.w_to_g(0.5))            # t = 0: no drift, no read noise yet
    arr.advance(1000.0)
    nu = np.abs(0.05 + 0.01 * arr.nu_xi)
    drifted = c.w_to_g(0.5) * ((1000.0 + 20.0) / 20.0) ** -nu
    np.testing.assert_allclose(arr.conductance().ravel(),
                               drifted + 0.02 * drifted * arr.read_xi, rtol=1e-12)
    rel = arr.conductance().ravel() / drifted - 1.0
    assert rel.std() == pytest.approx(0.02, rel=0.02)
    xi = arr.read_xi.copy()
    arr.advance(1.0)                                # the fluctuation is redrawn per time
    assert not np.array_equal(arr.read_xi, xi)


def test_shipped_pcm_card_keeps_its_laws():
    c = load_card(os.path.join(REPO, "device_models", "pcm_nandakumar2020.yaml"))
    assert type(make_law("drift", c.drift)).name == "pcm_nandakumar"
    assert type(make_law("programming_noise", c.programming_noise)).name == "pcm_nandakumar"
    assert math.isclose(make_law("drift", c.drift).t0_s, 20.0)

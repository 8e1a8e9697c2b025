"""The fast pulse path (one cached kernel per shipped step, over the nonzero counts only, one
index list for both sides of a pair, the one-pass programming sum) against the reference loop
over every device (:func:`crossbar_ep.devices.kernel.pulse_kernel`): bit for bit."""

import numpy as np
import pytest

from crossbar_ep.crossbar.array import CrossbarMatrix
from crossbar_ep.crossbar.array_energy import abs_count_dot
from crossbar_ep.devices import DeviceArray
from crossbar_ep.devices.card import card_from_dict, load_card
from crossbar_ep.devices.kernel import INLINED_STEPS, nonzero_index, reference_pulse, step_id
from crossbar_ep.devices.models import LinearStep

STEP = dict(dw_min=0.02, w_min=-1.0, w_max=1.0, up_down=0.1, dw_min_dtod=0.2,
            up_down_dtod=0.05, w_min_dtod=0.1, w_max_dtod=0.1, dw_min_std=0.5,
            write_noise_std=0.5)
MODELS = [
    ("constant_step", STEP),
    ("linear_step", dict(STEP, gamma_up=0.4, gamma_down=0.7, gamma_up_dtod=0.1)),
    ("soft_bounds", STEP),
    ("soft_bounds_pmax", dict(p_max=200, A_up=0.4, A_down=-0.6, A_dtod=0.1,
                              c2c_sigma=0.01)),          # additive noise
    ("exp_step", dict(STEP, A_up=-1.18, A_down=-0.08)),
    ("pow_step", dict(STEP, pow_gamma=2.0, pow_up_down=0.3, pow_gamma_dtod=0.1)),
    ("piecewise", dict(STEP, piecewise_up=[1.0, 0.6, 0.2],
                       piecewise_down=[0.3, 0.8, 1.0, 1.2])),
]


def card(model, params, faults=None):
    raw = {"name": "t", "model": model, "source": "test", "g_min_S": 1e-7, "g_max_S": 25e-6,
           "params": params}
    if faults:
        raw["faults"] = faults
    return card_from_dict(raw, "t.yaml")


class HalfLinear(LinearStep):
    """Not a shipped step: the fast path calls it as a first-class function."""

    @staticmethod
    def step(w, d, wmin, wmax, p, c):
        return (0.5 * p[0] if d > 0 else -0.5 * p[1]), 0.0


def twins(c, model=None):
    faults = {"stuck_at_gmin_frac": 0.05, "stuck_at_gmax_frac": 0.05}
    c = card(*c, faults=faults) if isinstance(c, tuple) else c
    a, b = (DeviceArray(c, (30, 40), np.random.default_rng(4)) for _ in range(2))
    if model is not None:
        a.model = b.model = model
    return a, b


@pytest.mark.parametrize("model,params", MODELS)
def test_fast_pulses_equal_reference_bit_for_bit(model, params):
    a, b = twins((model, params))
    assert step_id(a.model.step, a._P.shape[1]) >= 0          # a shipped step: inlined
    rng = np.random.default_rng(5)
    for r in range(6):
        n = rng.integers(-3, 4, a.shape) * (rng.random(a.shape) < 0.4)
        assert a.pulse(n) == reference_pulse(b, n)
        np.testing.assert_array_equal(a.w, b.w)
        np.testing.assert_array_equal(a.conductance(), b.conductance())
    assert a.pulse(np.zeros(a.shape, int)) == 0


def test_first_class_step_equals_reference():
    a, b = twins(("linear_step", MODELS[1][1]), model=HalfLinear)
    assert step_id(HalfLinear.step, a._P.shape[1]) == -1
    n = np.random.default_rng(6).integers(-4, 5, a.shape)
    for sign in (1, -1):
        assert a.pulse(n, sign) == reference_pulse(b, sign * n)
        np.testing.assert_array_equal(a.w, b.w)


def test_every_shipped_pulsed_model_is_inlined():
    from crossbar_ep.devices.registry import model_class, model_names
    steps = {m.step for m in INLINED_STEPS}
    for name in model_names():
        cls = model_class(name)
        if cls.pulsed:
            assert cls.step in steps, name


def test_nonzero_index_matches_numpy():
    n = np.random.default_rng(7).integers(-2, 3, 1000) * (np.arange(1000) % 3 == 0)
    idx, counts = np.empty(n.size, np.int64), np.empty(n.size, np.int64)
    m = nonzero_index(n, idx, counts)
    np.testing.assert_array_equal(idx[:m], np.flatnonzero(n))
    np.testing.assert_array_equal(counts[:m], n[n != 0])


@pytest.mark.parametrize("signed", ["differential", "reference"])
def test_array_fire_equals_reference(signed):
    """A crossbar array's pulses (one index list for both sides of a pair, G- taking -n) and
    programming energy against the reference: each side by the loop over every device, the
    energy as sum |n| V^2 G t in NumPy."""
    c = load_card("device_models/ecram_li_tang2018.yaml")
    W = 0.1 * np.random.default_rng(0).standard_normal((48, 64))
    cb, ref = (CrossbarMatrix(W, c, np.random.default_rng(1), signed=signed)
               for _ in range(2))
    rng = np.random.default_rng(2)
    for _ in range(3):
        n = rng.integers(-2, 3, W.shape) * (rng.random(W.shape) < 0.3)
        E_ref = c.write_voltage_V ** 2 * c.pulse_width_s * sum(
            float(np.sum(np.abs(n) * dev.conductance())) for _, dev in ref.device_arrays())
        fired_ref = reference_pulse(ref.pos, n) + (
            reference_pulse(ref.neg, -n) if ref.differential else 0)
        fired, E = cb.fire(n)
        assert fired == fired_ref
        assert E == pytest.approx(E_ref, rel=1e-12)
        for (_, d1), (_, d2) in zip(cb.device_arrays(), ref.device_arrays()):
            np.testing.assert_array_equal(d1.conductance(), d2.conductance())
        cb.refresh()


def test_abs_count_dot():
    rng = np.random.default_rng(8)
    n, g = rng.integers(-5, 6, 10_001), rng.random(10_001)
    assert abs_count_dot(n, g) == pytest.approx(float(np.sum(np.abs(n) * g)), rel=1e-12)

"""The one-pass refresh kernels give the bits of the NumPy expressions they replace."""

import numpy as np

from crossbar_ep.crossbar.operand_kernels import pair_weights, reference_weights, \
    transpose_blocked
from crossbar_ep.crossbar.reader import forward_rows
from crossbar_ep.crossbar.tiles import Tiling
from crossbar_ep.devices import STUCK_MAX, STUCK_MIN, DeviceArray
from crossbar_ep.devices.card import card_from_dict


def test_weights_bitwise():
    rng = np.random.default_rng(0)
    gp, gn = rng.uniform(1e-7, 25e-6, (2, 37, 53))
    g_min, span, scale = 1e-7, 25e-6 - 1e-7, 0.37
    u = lambda g: (g - g_min) / span  # noqa: E731
    for dtype in (np.float64, np.float32):
        out = np.empty(gp.shape, dtype)
        np.testing.assert_array_equal(pair_weights(gp, gn, g_min, span, scale, out),
                                      (scale * (u(gp) - u(gn))).astype(dtype))
        np.testing.assert_array_equal(reference_weights(gp, g_min, span, scale, out),
                                      (scale * (2.0 * u(gp) - 1.0)).astype(dtype))


def test_transpose_and_forward_rows():
    W = np.random.default_rng(1).standard_normal((45, 70)).astype(np.float32)
    np.testing.assert_array_equal(transpose_blocked(W), W.T)
    t = Tiling(45, 70, 32, 16)
    for rows, rt in zip(forward_rows(W, t.row_tiles), t.row_tiles):
        assert rows.flags.c_contiguous
        np.testing.assert_array_equal(rows, W[:, rt].T)


def test_conductance_equals_numpy_states():
    """Write noise, stuck devices at their own bounds, the clip at 0 S (a card whose
    w_min maps below 0 S)."""
    raw = {"name": "t", "model": "linear_step", "source": "test", "g_min_S": 1e-7,
           "g_max_S": 25e-6, "faults": {"stuck_at_gmin_frac": 0.1, "stuck_at_gmax_frac": 0.1},
           "params": {"dw_min": 0.05, "w_min": -1.0, "w_max": 1.0, "w_min_dtod": 0.3,
                      "write_noise_std": 3.0}}
    card = card_from_dict(raw, "t.yaml")
    dev = DeviceArray(card, (20, 30), np.random.default_rng(2))
    dev.pulse(np.random.default_rng(3).integers(-30, 31, dev.shape))
    assert (dev.stuck == STUCK_MIN).any() and (dev.stuck == STUCK_MAX).any()
    w = dev.w + dev.write_noise
    w = np.where(dev.stuck == STUCK_MIN, dev.wmin, w)
    w = np.where(dev.stuck == STUCK_MAX, dev.wmax, w)
    ref = np.maximum(card.w_to_g(w), 0.0).reshape(dev.shape)
    assert (card.w_to_g(w) < 0).any()                    # the clip is exercised
    np.testing.assert_array_equal(dev.conductance(), ref)

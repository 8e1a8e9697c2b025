"""benchmarks/bench_compute.py's bookkeeping: the MAC count of one training sample against a
count made by hand, and the crossing of the target accuracy."""

import importlib.util
import os

import numpy as np
import pytest

from crossbar_ep.model.network import make_network

HERE = os.path.dirname(os.path.abspath(__file__))


def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_compute", os.path.join(HERE, "..", "benchmarks", "bench_compute.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_macs_per_sample_by_hand():
    b = bench()
    net = make_network([7, 5, 4, 3], beta_i=0.1)         # W0 7->5, W1 5->4, Wf 4->3
    hidden = 5 * 4 + 4 * 5                               # W1 forward and its tied feedback
    T, K = 6, 3
    want = (T + K) * hidden + 7 * 5 + K * 3 * 4 + 2 * 4 * 3 + (7 * 5 + 5 * 4 + 4 * 3)
    assert b.macs_per_sample(net, T, K, recomputed=False) == want
    assert b.macs_per_sample(net, T, K, recomputed=True) == want + K * 4 * 3
    res = make_network([7, 5, 4, 3], residual=[(1, 2)], feedback="random")
    # W1, its random feedback, the skip R1_2 and its feedback partner: four 5 x 4 reads
    assert b.macs_per_sample(res, 1, 0, False) == 4 * (5 * 4) + 7 * 5 + 2 * 12 + \
        (7 * 5 + 5 * 4 + 5 * 4 + 4 * 3)


def test_crossing_is_interpolated_between_evaluations():
    b = bench()
    curve = [(0, 0.0, 0.0, np.nan), (100, 10.0, 20.0, 0.90), (200, 30.0, 50.0, 0.98)]
    assert b._interpolate(curve, 0.97) == pytest.approx((187.5, 27.5, 46.25))
    assert b._interpolate(curve[:2], 0.5) == (100, 10.0, 20.0)     # first evaluation above

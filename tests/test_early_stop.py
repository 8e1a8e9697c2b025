"""Convergence-driven settling (settling.early_stop): phases end once max |ds| per tau
falls below the tolerance; the EP updates agree with fixed-length phases."""

import numpy as np
from conftest import small_config
from test_normalisation import _cos

import crossbar_ep as cx
from crossbar_ep.model.learners import one_hot


def _updates(early_stop, nudge="frozen", tol=1e-3):
    net = cx.make_network([20, 16, 16, 16, 16, 4], seed=2, beta_i=0.1, beta_f=0.1,
                          residual=[(1, 4)], dtype="float64")
    model = cx.ep_learner(net, T=60, K=40, nudge_error=nudge, early_stop=early_stop,
                          tolerance=tol)
    rng = np.random.default_rng(3)
    x, y = rng.random((40, 20)), rng.integers(0, 4, 40)
    g, free = model.updates(x, one_hot(y, 4, np.float64))
    return g, free, model.last_nudged


def test_early_stop_matches_fixed_length_updates_with_fewer_steps():
    g_fix, f_fix, n_fix = _updates(False)
    g_es, f_es, n_es = _updates(True)
    assert f_fix.steps == 60 and n_fix.steps == 40
    assert f_es.steps < 60 and n_es.steps < 40
    assert f_es.residual < 1e-3 and n_es.residual < 1e-3
    for name in g_fix:
        assert _cos(g_es[name], g_fix[name]) > 0.99, name
    # the free states: a contraction stopped at residual r is within about r of the fixed point
    for k in range(1, 5):
        assert np.abs(f_es.s[k] - f_fix.s[k]).max() < 1e-2


def test_cumulative_nudge_with_early_stop_still_stops_at_K():
    """The cumulative drive grows every step, so the nudged phase rarely converges: it runs
    until K (or the tolerance, when the growth per step is below it)."""
    _, _, nudged = _updates(True, "cumulative")
    assert 1 <= nudged.steps <= 40


def test_early_stop_through_the_config_reduces_steps_in_the_metrics(tmp_path):
    from crossbar_ep.runs import train
    rows = {}
    for es in (False, True):
        cfg = small_config(model={"hidden": [16, 16, 16]},
                           training={"T": 40, "K": 20, "epochs": 1},
                           settling={"early_stop": es, "tolerance": 1e-3})
        run = train.start(cfg, str(tmp_path / str(es)))
        rows[es] = train.fit(run, progress=False)
        run.lock = None
    import json
    fixed = json.load(open(tmp_path / "False" / "metrics.json"))[0]
    early = json.load(open(tmp_path / "True" / "metrics.json"))[0]
    assert fixed["settle_steps"] == 40 and early["settle_steps"] < 40
    assert abs(fixed["test_acc"] - early["test_acc"]) < 0.05

"""Convergence-driven settling (settling.early_stop): phases end once max |ds| per tau
falls below the tolerance; the EP updates agree with fixed-length phases."""

import numpy as np
import pytest
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


def _layered_nudge(early_stop, mode="absolute", tol=1e-3, K=200):
    """Free and nudged phases of a 6-layer chain (beta_i 0.1: the nudge reaches layer 1 at
    beta_f 1e-5 of its size at the top); returns (nudged - free) per layer and steps."""
    net = cx.make_network([20, 16, 16, 16, 16, 16, 16, 4], seed=4, beta_i=0.1, beta_f=0.1,
                          dtype="float64")
    model = cx.ep_learner(net, T=300, K=K, early_stop=early_stop, tolerance=tol,
                          tolerance_mode=mode)
    rng = np.random.default_rng(5)
    x, y = rng.random((30, 20)), rng.integers(0, 4, 30)
    free = model.settler.free(x)
    nudged = model.settler.nudged(free, one_hot(y, 4, np.float64))
    return [nudged.s[k] - free.s[k] for k in range(1, 7)], free.steps, nudged.steps


def test_relative_tolerance_settles_the_deep_layers_an_absolute_one_leaves_behind():
    """Absolute 1e-3: the free phase stops with a drift larger than layer 1's signal
    (1.4e-6) and the nudged phase after 6 steps; layer 1's EP signal is off by 3.9x.  Relative
    1e-2 (each layer to 1% of its nudge gain): within 1% at every layer, still far fewer
    steps than the fixed 300 / 200."""
    ref, _, _ = _layered_nudge(False)                       # 300 / 200 steps: settled
    absolute, _, n_abs = _layered_nudge(True, "absolute", 1e-3)
    relative, f_rel, n_rel = _layered_nudge(True, "relative", 1e-2)

    def err(d, k):    # relative error of layer k's nudge against the settled one
        return np.abs(d[k - 1] - ref[k - 1]).max() / np.abs(ref[k - 1]).max()
    assert n_abs <= 6 and err(absolute, 1) > 1.0
    assert 6 <= n_rel < 50 and f_rel < 150   # one step per layer at least, far fewer than K
    assert max(err(relative, k) for k in range(1, 7)) < 0.02


def test_phase_stop_rule():
    from crossbar_ep.model.convergence import PhaseStop
    absolute = PhaseStop(0.1)
    absolute.start(nudged=True)
    assert absolute.settled(0.05, 1) and not absolute.settled(0.2, 1)
    stop = PhaseStop(0.1, "relative", min_steps=2, gains={1: 0.01})    # layer 2: gain 1
    for nudged in (False, True):
        stop.start(nudged)
        stop.layer(1, 5e-4)              # 5e-4 < 0.1 * 0.01
        stop.layer(2, 0.05)              # 0.05 < 0.1 * 1
        assert stop.settled(0.05, 1) != nudged     # nudged: fewer than min_steps
        stop.layer(1, 2e-3)              # layer 1 not yet, whatever the others do
        stop.layer(2, 0.0)
        assert not stop.settled(2e-3, 2)
        stop.layer(1, 1e-4)
        stop.layer(2, 0.0)
        assert stop.settled(1e-4, 3)
    with pytest.raises(ValueError, match="tolerance mode"):
        PhaseStop(0.1, "percent")

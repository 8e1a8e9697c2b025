"""Deep EP (Table 2 of Liu & Chen): the authors' AGT graphs from their seeds."""

import pytest

from conftest import small_config
from crossbar_ep.model.network import agt_links

# ../shared/reference/deep_ep.md: the graphs the authors' code drew for 10 layers, p = 0.2
PUBLISHED = {
    199: ("2->4, 2->8, 2->9, 3->6, 5->9", "7->1, 7->2, 8->5, 8->6, 9->7"),
    200: ("1->7, 2->8, 4->9, 6->9", "3->1, 6->1, 7->5, 9->1, 9->2, 9->5"),
    201: ("1->7, 1->9, 2->4, 2->7, 3->8, 4->7, 4->8, 4->9, 5->8",
          "5->3, 7->1, 9->3, 9->5, 9->7, 10->2, 10->5"),
    202: ("1->9, 2->6, 3->5, 4->6, 4->7, 4->8, 4->9, 7->10", "5->1, 7->4, 7->5, 9->1"),
    203: ("1->3, 3->8, 4->10, 6->9, 7->10", "3->1, 4->1, 5->3, 7->3, 9->1, 9->7, 10->2"),
}


def _pairs(text: str) -> list:
    return [tuple(int(v) for v in item.split("->")) for item in text.split(", ")]


@pytest.mark.parametrize("seed", sorted(PUBLISHED))
def test_legacy_seed_mode_reproduces_the_published_agt_graphs(seed):
    fwd, fb = agt_links(10, 0.2, seed, legacy=True)
    assert sorted(fwd) == sorted(_pairs(PUBLISHED[seed][0]))
    assert sorted(fb) == sorted(_pairs(PUBLISHED[seed][1]))


def test_agt_seed_mode_reaches_the_network_and_keeps_numpy_state():
    import numpy as np

    from crossbar_ep.config.build import build_network
    np.random.seed(7)
    before = np.random.rand()
    np.random.seed(7)
    cfg = small_config(model={"hidden": [8] * 10, "feedback": "random",
                              "residual": {"kind": "agt", "p": 0.2, "seed": 199,
                                           "seed_mode": "legacy"}},
                       training={"T": 20, "K": 10})
    net = build_network(cfg, 20, 4, np.random.default_rng(0))
    assert np.random.rand() == before          # the global generator is left as it was
    skips = sorted((p.src, p.dst) for p in net.projections if p.name.startswith("R"))
    assert skips == sorted(_pairs(PUBLISHED[199][0]))
    fixed = sorted((f.src, f.dst) for f in net.feedbacks if f.name.startswith("BR"))
    assert fixed == sorted(_pairs(PUBLISHED[199][1]))


def test_cumulative_nudge_grows_with_the_step_against_numpy():
    """nudge_error: cumulative drives layer L with k beta_f B_f e0 at nudged step k, e0 the
    free output error (the authors' graph code)."""
    import numpy as np

    import crossbar_ep as cx
    from crossbar_ep.model.settle import softmax

    net = cx.make_network([10, 8, 6, 3], beta_i=0.1, beta_f=0.1, seed=3, dtype="float64")
    model = cx.ep_learner(net, T=15, K=6, nudge_error="cumulative")
    rng = np.random.default_rng(1)
    x, y = rng.random((4, 10)), rng.integers(0, 3, 4)
    free = model.settle(x)
    nudged = model.settle(x, y, free)
    W0, W1, Wf = (net.W[n] for n in ("W0", "W1", "Wf"))
    e0 = np.eye(3)[y] - softmax(free.s[2] @ Wf.T)
    s1, s2 = free.s[1].copy(), free.s[2].copy()
    for k in range(1, 7):
        s1, s2 = (np.tanh(x @ W0.T + 0.1 * s2 @ W1),
                  np.tanh(s1 @ W1.T + k * 0.1 * e0 @ Wf))
    np.testing.assert_allclose(nudged.s[1], s1, atol=1e-12)
    np.testing.assert_allclose(nudged.s[2], s2, atol=1e-12)
    with pytest.raises(cx.ConfigError, match="cumulative"):
        cx.ep_learner(net, mode="ode", method="heun", nudge_error="cumulative")


@pytest.mark.parametrize("readout", ["free", "nudged"])
def test_readout_error_free_or_nudged(readout):
    import numpy as np

    import crossbar_ep as cx

    net = cx.make_network([10, 8, 3], beta_f=0.5, seed=2, dtype="float64")
    model = cx.ep_learner(net, T=10, K=5, readout_error=readout)
    rng = np.random.default_rng(4)
    x, y = rng.random((6, 10)), rng.integers(0, 3, 6)
    y1h = np.eye(3)[y]
    g, free = model.updates(x, y1h)
    end = model.last_nudged if readout == "nudged" else free
    np.testing.assert_allclose(g["Wf"], (y1h - end.p).T @ free.s[1] / 6, atol=1e-12)
    assert np.abs(model.last_nudged.p - free.p).max() > 1e-6   # the two really differ


def test_config_keys_for_the_graph_code_conventions():
    cfg = small_config(training={"nudge_error": "cumulative", "readout_error": "nudged"})
    assert cfg.training.nudge_error == "cumulative" and cfg.training.readout_error == "nudged"
    from crossbar_ep.errors import ConfigError
    with pytest.raises(ConfigError, match="nudge_error"):
        small_config(training={"nudge_error": "cumulative"},
                     settling={"mode": "ode", "method": "heun"})


def test_run_directory_records_the_drawn_graph(tmp_path):
    import json

    from crossbar_ep.runs import train
    cfg = small_config(model={"hidden": [8] * 10, "feedback": "random",
                              "residual": {"kind": "agt", "p": 0.2, "seed": 200,
                                           "seed_mode": "legacy"}},
                       training={"T": 20, "K": 10, "epochs": 1})
    run = train.start(cfg, str(tmp_path / "r"))
    g = json.load(open(tmp_path / "r" / "graph.json"))
    skips = sorted((f["src"], f["dst"]) for f in g["forward"] if f["name"].startswith("R"))
    assert skips == sorted(_pairs(PUBLISHED[200][0]))
    fixed = sorted((f["src"], f["dst"]) for f in g["feedback"] if f["tied"] is None
                   and f["name"].startswith("BR"))
    assert fixed == sorted(_pairs(PUBLISHED[200][1]))
    assert g["sizes"] == [20] + [8] * 10 + [4]
    run.lock = None

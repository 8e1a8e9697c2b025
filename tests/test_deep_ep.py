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

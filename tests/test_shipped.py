"""Shipped experiments and device cards: every shipped recipe validates, and the RPU in-situ
recipe file is the shipped in-situ file with the overrides its comments name."""

import os

import pytest
from conftest import REPO

from crossbar_ep.config.experiment import load_config

EXPERIMENTS = os.path.join(REPO, "experiments")
RPU_OVERRIDES = ["crossbar.device=device_models/rpu_gokmen2016.yaml",
                 "crossbar.weight_range_factor=[2,2,2,4]", "crossbar.update.threshold=4",
                 "crossbar.update.momentum=0", "training.momentum=0"]


def _plain(cfg) -> dict:
    d = cfg.to_dict()
    for k in ("name", "description", "source"):
        d.pop(k, None)
    return d


def test_rpu_recipe_file_equals_the_in_situ_file_with_its_overrides():
    rpu = load_config(os.path.join(EXPERIMENTS, "mnist_3hl_crossbar_rpu.yaml"))
    base = load_config(os.path.join(EXPERIMENTS, "mnist_3hl_crossbar.yaml"), RPU_OVERRIDES)
    assert rpu.name == "mnist_3hl_crossbar_rpu"
    assert os.path.basename(rpu.crossbar.device) == "rpu_gokmen2016.yaml"
    assert _plain(rpu) == _plain(base)
    # and the overrides change something: the two shipped files differ exactly there
    li = load_config(os.path.join(EXPERIMENTS, "mnist_3hl_crossbar.yaml"))
    assert _plain(li) != _plain(rpu)
    assert li.crossbar.update.threshold == 8 and rpu.crossbar.update.threshold == 4


@pytest.mark.parametrize("name", ["mnist_3hl_crossbar_rpu.yaml", "mnist_3hl_crossbar.yaml",
                                  "mnist_conv_crossbar.yaml"])
def test_in_situ_recipes_validate_with_their_cards(name, capsys):
    from crossbar_ep.cli import main
    assert main(["validate", os.path.join(EXPERIMENTS, name)]) == 0
    assert "OK" in capsys.readouterr().out

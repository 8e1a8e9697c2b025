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


# ---- shipped names: cards, experiments and sweep files resolve from any folder ----

from crossbar_ep import shipped  # noqa: E402
from crossbar_ep.cli import main  # noqa: E402
from crossbar_ep.devices.card import load_card  # noqa: E402

CARDS = os.path.join(REPO, "device_models")


def test_cards_load_by_name_as_by_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # nowhere near the repository
    for ref in ("ecram_li_tang2018", "ecram_li_tang2018.yaml",
                "device_models/ecram_li_tang2018.yaml"):
        by_name = load_card(ref)
        by_path = load_card(os.path.join(CARDS, "ecram_li_tang2018.yaml"))
        assert by_name == by_path, ref
    with pytest.raises(Exception, match="no shipped card of that name"):
        load_card("ecram_li_tang2019")


def test_a_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = open(os.path.join(CARDS, "ideal.yaml"), encoding="utf-8").read()
    (tmp_path / "ecram_li_tang2018").write_text(text.replace("name:", "name: local", 1))
    assert load_card("ecram_li_tang2018").path == "ecram_li_tang2018"


def test_experiments_resolve_by_name_with_their_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("mnist_3hl_crossbar", ["crossbar.device=rpu_gokmen2016"])
    assert cfg.source == os.path.join(EXPERIMENTS, "mnist_3hl_crossbar.yaml")
    assert cfg.crossbar.device == os.path.join(CARDS, "rpu_gokmen2016.yaml")
    cfg = load_config("mnist_3hl_crossbar")           # device_models/... inside the file
    assert cfg.crossbar.device == os.path.join(CARDS, "ecram_li_tang2018.yaml")
    assert shipped.resolve_experiment("wire_resistance", sweeps=True) == os.path.join(
        EXPERIMENTS, "sweeps", "wire_resistance.yaml")
    assert shipped.resolve_experiment("sweeps/states") == os.path.join(
        EXPERIMENTS, "sweeps", "states.yaml")
    with pytest.raises(Exception, match="did you mean mnist_3hl"):
        shipped.resolve_experiment("mnist_3h")


def test_user_paths_of_an_installed_experiment_point_at_the_working_folder(tmp_path,
                                                                          monkeypatch):
    pkg = tmp_path / "site" / "crossbar_ep"
    inside = pkg / "_shipped" / "experiments" / "sweeps"
    inside.mkdir(parents=True)
    monkeypatch.setattr(shipped, "_PKG", str(pkg))
    monkeypatch.chdir(tmp_path)
    assert shipped.user_folder(str(inside / "x.yaml")) == str(tmp_path / "experiments" /
                                                             "sweeps")
    elsewhere = tmp_path / "mine"
    assert shipped.user_folder(str(elsewhere / "x.yaml")) == str(elsewhere)


def test_cli_by_name_from_another_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "mnist_3hl_crossbar_rpu"]) == 0
    assert main(["validate", "wire_resistance"]) == 0      # a sweep: base ../ of it
    assert "sweep wire_resistance" in capsys.readouterr().out
    assert main(["run", "mnist_3hl_crossbar_rpux"]) == 2
    assert "did you mean mnist_3hl_crossbar_rpu" in capsys.readouterr().err


def test_compare_arguments_resolve_card_and_twin_names():
    from crossbar_ep.cli import _parser
    from crossbar_ep.cli_shipped import resolve_names
    args = _parser().parse_args(["compare", "mnist_3hl_crossbar", "--device", "ideal",
                                 "--device", "device_models/rpu_gokmen2016.yaml",
                                 "--twin", "mnist_3hl_crossbar_twin"])
    resolve_names(args)
    assert args.experiment == os.path.join(EXPERIMENTS, "mnist_3hl_crossbar.yaml")
    assert [os.path.basename(d) for d in args.devices] == ["ideal.yaml",
                                                           "rpu_gokmen2016.yaml"]
    assert all(os.path.isfile(d) for d in args.devices)
    assert args.twin == os.path.join(EXPERIMENTS, "mnist_3hl_crossbar_twin.yaml")


def test_device_list_shows_every_card_with_its_citation(capsys):
    import yaml
    assert main(["device", "list"]) == 0
    out = capsys.readouterr().out
    files = sorted(f for f in os.listdir(CARDS) if f.endswith(".yaml"))
    assert f"{len(files)} cards" in out
    for f in files:
        raw = yaml.safe_load(open(os.path.join(CARDS, f), encoding="utf-8"))
        line = next(ln for ln in out.splitlines() if ln.startswith(f[:-5] + " "))
        assert raw["model"] in line and " ".join(str(raw["source"]).split()) in line, line

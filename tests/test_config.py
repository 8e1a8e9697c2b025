import glob
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from crossbar_ep.cli import main
from crossbar_ep.config.experiment import config_from_dict, load_config
from crossbar_ep.errors import ConfigError


def err(raw):
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, "exp.yaml")
    return str(e.value)


def test_unknown_key_did_you_mean():
    assert err({"training": {"bta_f": 0.1}}) == (
        "exp.yaml: training.bta_f: unknown key; did you mean 'beta_f'? (allowed: algorithm, "
        "epochs, batch_size, optimizer, lr, momentum, adam_beta1, adam_beta2, adam_eps, T, K, "
        "beta_f, nudge_error, readout_error, nudging, update_norm, dtype, seed, eval_batch_size, "
        "weight_decay, lr_schedule, lr_min, schedule_epochs, weight_noise_add, "
        "weight_noise_mul, weight_noise_card, weight_noise_scale, grad_clip_norm, "
        "memory_limit_gib)")
    assert err({"modle": {}}).startswith("exp.yaml: modle: unknown key; did you mean 'model'?")


def test_wrong_type():
    assert err({"model": {"hidden": [512, "wide", 512]}}) == (
        "exp.yaml: model.hidden[1]: expected an integer, got 'wide' (str)")
    assert err({"training": {"epochs": True}}) == (
        "exp.yaml: training.epochs: expected an integer, got True (bool)")
    assert err({"training": {"beta_f": "0.1"}}) == (
        "exp.yaml: training.beta_f: expected a number, got '0.1' (str)")


def test_out_of_range():
    assert err({"model": {"hidden": [512, 512, -3]}}) == (
        "exp.yaml: model.hidden[2]: must be >= 1, got -3")
    assert err({"training": {"beta_f": 0.0}}) == "exp.yaml: training.beta_f: must be > 0, got 0"
    assert err({"model": {"activation": "relu"}}) == (
        "exp.yaml: model.activation: must be one of tanh, hard_sigmoid, shifted_sigmoid; got "
        "'relu' (str)")


def test_T_below_depth():
    assert err({"model": {"hidden": [8, 8, 8, 8]}, "training": {"T": 3}}) == (
        "exp.yaml: training.T: must be >= the number of hidden layers (4) so the input "
        "reaches the top layer; got 3")


def test_cross_field_rules():
    assert err({"model": {"hidden": [8, 8], "beta_i": [0.1, 0.1, 0.1]}}) == (
        "exp.yaml: model.beta_i: has 3 values but model.hidden has 2 layers; give one value or 2")
    assert err({"model": {"hidden": [8, 8]}, "training": {"lr": [0.1]}}) == (
        "exp.yaml: training.lr: has 1 values; give one value or 3 (W_0 .. W_1, W_f)")
    assert err({"model": {"hidden": [8] * 4, "residual": {"kind": "pairs", "pairs": [[1, 6]]}}}) == (
        "exp.yaml: model.residual.pairs[0]: layers must lie in 1..4 (hidden layers), got [1, 6]")
    assert err({"model": {"hidden": [8] * 4, "residual": {"kind": "pairs", "pairs": [[3, 1]]}}}) == (
        "exp.yaml: model.residual.pairs[0]: from must be < to (feedback partners are added "
        "automatically), got [3, 1]")
    assert "agt links are asymmetric" in err({"model": {"hidden": [8] * 4, "residual": "agt"}})
    assert "every-3 needs at least 4" in err({"model": {"hidden": [8] * 3, "residual": "every-3"}})
    assert "only used with settling.mode: ode" in err({"settling": {"dt_over_tau": 0.5}})


def test_residual_topologies():
    c = config_from_dict({"model": {"hidden": [8] * 10, "residual": "every-3"},
                          "training": {"T": 100}})
    assert c.residual_pairs() == ((1, 4), (4, 7), (7, 10))
    c = config_from_dict({"model": {"hidden": [8] * 5, "residual": {"kind": "pairs",
                                                                    "pairs": [[1, 3], [2, 5]]}}})
    assert c.residual_pairs() == ((1, 3), (2, 5))


def test_config_is_frozen():
    c = config_from_dict({})
    with pytest.raises(Exception):
        c.training.epochs = 3


def test_overrides_and_relative_dir(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("data: {dir: mydata}\nmodel: {hidden: [16, 16], residual: none}\n")
    c = load_config(str(p), ["training.epochs=2", "model.hidden=[4,4,4]",
                             "model.residual.kind=none"])
    assert c.training.epochs == 2 and c.model.hidden == (4, 4, 4)
    assert c.data.dir == str(tmp_path / "mydata")
    with pytest.raises(ConfigError, match=r"e.yaml: training.epochs: expected an integer"):
        load_config(str(p), ["training.epochs=many"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(str(p), ["training.epochs"])


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML"):
        load_config(str(p))
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_config(str(tmp_path / "nope.yaml"))


def test_validate_cli(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("training: {T: 1}\n")
    assert main(["validate", str(p)]) == 2
    assert "training.T: must be >= the number of hidden layers (3)" in capsys.readouterr().err
    assert main(["validate", os.path.join(REPO, "experiments", "mnist_3hl.yaml")]) == 0


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(os.path.join(REPO, "experiments",
                                                                       "*.yaml"))
                                         if not os.path.basename(p).startswith("sweep_")))
def test_shipped_experiments_validate(path):
    load_config(path)


def test_table1_settings():
    c = load_config(os.path.join(REPO, "experiments", "mnist_3hl.yaml"))
    t = c.training
    assert c.model.hidden == (512, 512, 512) and c.model.activation == "tanh"
    assert (c.model.beta_i, t.beta_f, t.T, t.K, t.lr, t.batch_size, t.epochs, t.optimizer) == \
        (0.01, 0.1, 18, 10, 1e-3, 500, 50, "adam")
    c2 = load_config(os.path.join(REPO, "experiments", "mnist_2hl.yaml"))
    assert (c2.model.hidden, c2.training.T, c2.training.K) == ((512, 512), 10, 10)
    twin = yaml.safe_load(open(os.path.join(REPO, "experiments", "mnist_3hl_bp.yaml")))
    base = yaml.safe_load(open(os.path.join(REPO, "experiments", "mnist_3hl.yaml")))
    twin["training"].pop("algorithm"), base["training"].pop("algorithm")
    assert twin["model"] == base["model"] and twin["training"] == base["training"]


def test_resolved_config_roundtrips(tmp_path):
    c = load_config(os.path.join(REPO, "experiments", "mnist_3hl.yaml"))
    from crossbar_ep.config.experiment import dump_config
    dump_config(c, str(tmp_path / "r.yaml"))
    c2 = load_config(str(tmp_path / "r.yaml"))
    assert c2.to_dict() == c.to_dict()


def test_config_reference_is_up_to_date():
    r = subprocess.run([sys.executable, "-m", "crossbar_ep.config.docs", "--check"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout

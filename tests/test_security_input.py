"""Input robustness: bounded work for any YAML, tight config ranges, validated data
files, and clear errors (exit 2, no traceback) for malformed experiment files."""

import gzip
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, idx_bytes, make_fake_dataset, small_config, write_idx

from crossbar_ep import yamlio
from crossbar_ep.cli import main
from crossbar_ep.config.experiment import load_config
from crossbar_ep.errors import ConfigError, CrossbarEPError, DataError
from crossbar_ep.io import data as D

EXP = os.path.join(REPO, "experiments", "mnist_3hl.yaml")


def bomb(levels: int = 9, indent: str = "  ") -> str:
    """A "billion laughs" mapping: 9 aliases per level, 9^levels leaves once expanded."""
    names = "abcdefghi"[:levels]
    lines = [f"{indent}a: &a [x,x,x,x,x,x,x,x,x]"]
    lines += [f"{indent}{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]"
              for p, n in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


def cli_error(capsys, *argv) -> str:
    """Run the CLI in-process; it must exit 2 with one short message and no traceback."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


# -- 1. bounded work -------------------------------------------------------------------------

def test_yaml_alias_bomb_fails_fast(tmp_path, capsys):
    p = tmp_path / "bomb.yaml"
    p.write_text("name:\n" + bomb())
    assert len(p.read_text()) < 400
    t0 = time.monotonic()
    err = cli_error(capsys, "validate", str(p))
    assert time.monotonic() - t0 < 10
    assert str(p) in err and "100000 YAML nodes" in err and "CROSSBAR_EP_YAML_MAX_NODES" in err
    assert len(err) < 600


def test_yaml_alias_bomb_in_set_override(capsys):
    value = "{" + bomb(7, "").replace("\n", ", ").rstrip(", ") + "}"
    t0 = time.monotonic()
    err = cli_error(capsys, "validate", EXP, "--set", "name=" + value)
    assert time.monotonic() - t0 < 10
    assert "--set name=" in err and "100000 YAML nodes" in err and len(err) < 700


def test_yaml_node_limit_is_configurable(tmp_path, monkeypatch):
    p = tmp_path / "e.yaml"
    p.write_text("model: {hidden: [8, 8]}\ntraining: {T: 4, K: 4}\n")
    monkeypatch.setenv("CROSSBAR_EP_YAML_MAX_NODES", "5")
    with pytest.raises(ConfigError, match="more than 5 YAML nodes"):
        load_config(str(p))
    monkeypatch.setenv("CROSSBAR_EP_YAML_MAX_NODES", "lots")
    with pytest.raises(ConfigError, match=r"CROSSBAR_EP_YAML_MAX_NODES='lots': give a positive"):
        load_config(str(p))
    monkeypatch.delenv("CROSSBAR_EP_YAML_MAX_NODES")
    assert load_config(str(p)).model.hidden == (8, 8)


def test_yaml_file_size_cap(tmp_path, monkeypatch):
    p = tmp_path / "big.yaml"
    p.write_text("description: '" + "x" * 2000 + "'\n")
    monkeypatch.setenv("CROSSBAR_EP_YAML_MAX_BYTES", "1000")
    with pytest.raises(ConfigError, match=r"big.yaml: larger than 1000 bytes.*"
                                          r"CROSSBAR_EP_YAML_MAX_BYTES"):
        load_config(str(p))


def test_recursive_and_deep_yaml(tmp_path):
    p = tmp_path / "cycle.yaml"
    p.write_text("model: {hidden: &h [1, *h]}\n")
    with pytest.raises(ConfigError, match="recursive alias"):
        load_config(str(p))
    p.write_text("name: " + "[" * 1500 + "]" * 1500 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(str(p))
    # deep through aliases: each level adds 10 brackets, 10 levels -> 100 deep
    text = "a0: &a0 x\n" + "".join(f"a{i}: &a{i} {'[' * 10}*a{i - 1}{']' * 10}\n"
                                    for i in range(1, 11))
    p.write_text("name:\n" + "".join("  " + line + "\n" for line in text.splitlines()))
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        load_config(str(p))


def test_error_messages_truncate_values(tmp_path):
    p = tmp_path / "long.yaml"
    p.write_text("model: {hidden: [8, '" + "w" * 10_000 + "']}\n" + "x" * 5000 + ": 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert len(str(e.value)) < 500 and "..." in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(EXP, ["model.hidden=[" + ", ".join(["[1]"] * 5_000) + "]"])
    assert len(str(e.value)) < 600
    with pytest.raises(ConfigError) as e:
        load_config(EXP, ["training.epochs=" + "9" * 5000])
    assert len(str(e.value)) < 600


# -- 2. validation ranges --------------------------------------------------------------------

@pytest.mark.parametrize("section, key, value, message", [
    ("training", "adam_eps", 1e-300, "training.adam_eps: must be >= 1e-12"),
    ("training", "adam_beta1", 1.0, "training.adam_beta1: must be < 1"),
    ("training", "adam_beta2", 1.0, "training.adam_beta2: must be < 1"),
    ("training", "momentum", 1.0, "training.momentum: must be < 1"),
    ("training", "lr", float("nan"), "training.lr: must be finite"),
    ("training", "lr", float("inf"), "training.lr: must be finite"),
    ("training", "lr", 1e9, "training.lr: must be <= 1000"),
    ("training", "beta_f", float("nan"), "training.beta_f: must be finite"),
    ("model", "beta_i", float("inf"), "model.beta_i: must be finite"),
    ("model", "hidden", [1_000_000_000], "model.hidden[0]: must be <= 100000"),
    ("model", "hidden", [60_000, 60_000], "model.hidden: the net would have"),
    ("training", "epochs", 10**12, "training.epochs: must be <= 1000000"),
    ("training", "batch_size", 10**12, "training.batch_size: must be <= 1000000000"),
    ("training", "batch_size", 10**8, "training.batch_size: batch_size x the hidden units"),
    ("training", "T", 10**9, "training.T: must be <= 1000000"),
    ("training", "seed", 2**64, "training.seed: must be <= 4294967295"),
    ("settling", "dt_over_tau", 1e-300, "settling.dt_over_tau: must be >= 0.0001"),
])
def test_schema_rejects_values_that_break_the_math(section, key, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        small_config(**{section: {key: value}})


def test_ode_step_counts_and_atol_floor():
    with pytest.raises(ConfigError, match="settling.dt_over_tau: a phase of 100000 tau"):
        small_config(settling={"mode": "ode", "dt_over_tau": 0.001}, training={"T": 100_000})
    with pytest.raises(ConfigError, match=r"settling.atol: 1e-08 is below the floor for "
                                          r"float32 \(1e-06\)"):
        small_config(settling={"mode": "ode", "method": "adaptive", "atol": 1e-8},
                     training={"dtype": "float32"})
    with pytest.raises(ConfigError, match="settling.atol: must be >= 1e-08"):
        small_config(settling={"mode": "ode", "method": "adaptive", "atol": 1e-12})
    small_config(settling={"mode": "ode", "method": "adaptive", "atol": 1e-8})   # float64: ok


def test_adaptive_integrator_stops_when_atol_is_unreachable():
    """Below the dtype's resolution the step size collapses: a clear error, not a hang."""
    from crossbar_ep.config.build import build_network, make_learner
    cfg = small_config(settling={"mode": "ode", "method": "adaptive"},
                       training={"dtype": "float32"})
    net = build_network(cfg, 20, 4, np.random.default_rng(0))
    settler = make_learner(cfg, net, None).settler
    settler.atol = 1e-10          # bypasses the schema floor on purpose
    x = np.random.default_rng(0).random((8, 20)).astype(np.float32)
    t0 = time.monotonic()
    with pytest.raises(CrossbarEPError, match=r"settling.atol = 1e-10: the adaptive step fell "
                                              r"to 1e-06 tau.*float32"):
        settler.free(x)
    assert time.monotonic() - t0 < 30


# -- 3. data files ---------------------------------------------------------------------------

def fake(tmp_path, monkeypatch, **arrays):
    """A fake MNIST folder whose parts (train_images=..., ...) are replaced by ``arrays``."""
    folder = tmp_path / "mnist"
    make_fake_dataset(folder, n_train=20, n_test=10)
    for part, arr in arrays.items():
        write_idx(folder / D.FILES[part], arr)
    monkeypatch.setitem(D.MD5, "mnist", {})
    return str(tmp_path)


@pytest.mark.parametrize("part, arr, message", [
    ("train_labels", np.full(20, 12, np.uint8), r"train-labels-idx1-ubyte.gz: label 12 at "
                                                r"index 0 is outside the classes 0..9"),
    ("test_labels", np.array([-1] * 10, np.int8), "label -1 at index 0 is outside"),
    ("train_images", np.zeros((0, 0, 0), np.uint8), r"train-images-idx3-ubyte.gz: empty"),
    ("test_images", np.zeros((10, 14, 14), np.uint8),
     r"t10k-images-idx3-ubyte.gz: test images are 14x14 but the training images .* are 28x28"),
    ("test_labels", np.zeros(7, np.uint8), r"7 labels for the 10 images"),
])
def test_bad_data_files_fail_on_load(tmp_path, monkeypatch, part, arr, message):
    if arr.dtype == np.int8:   # signed labels: IDX type code 0x09
        payload = bytes([0, 0, 0x09, 1]) + len(arr).to_bytes(4, "big") + arr.tobytes()
        with gzip.open(tmp_path / "x.gz", "wb") as fh:
            fh.write(payload)
        base = fake(tmp_path, monkeypatch)
        os.replace(tmp_path / "x.gz", tmp_path / "mnist" / (D.FILES[part] + ".gz"))
    else:
        base = fake(tmp_path, monkeypatch, **{part: arr})
    with pytest.raises(DataError, match=message):
        D.load_idx_dataset("mnist", base, allow_download=False)


def test_corrupt_gzip_stream(tmp_path):
    blob = bytearray(gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8))))
    blob[20:40] = b"\xff" * 20     # damage the deflate data, keep the gzip header
    p = tmp_path / "bad.gz"
    p.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"bad.gz: cannot read the gzip stream .*delete it"):
        D.read_idx(str(p))


def test_header_claims_more_than_the_file_holds(tmp_path):
    p = tmp_path / "claim"
    p.write_bytes(bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big")
                  + (28).to_bytes(4, "big") + b"\x00" * 100)
    with pytest.raises(DataError, match=r"100 bytes but its header \(60000, 28, 28\) needs"):
        D.read_idx(str(p))
    # huge dims: 2^32-1 in every one of 4 dims, no allocation and no int64 wrap-around
    p.write_bytes(bytes([0, 0, 8, 4]) + b"\xff\xff\xff\xff" * 4)
    with pytest.raises(DataError, match="IDX payload has 0 bytes but its header"):
        D.read_idx(str(p))


def test_gzip_bomb_is_capped(tmp_path, monkeypatch):
    p = tmp_path / "bomb.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b"\x00" * 5_000_000)
    monkeypatch.setenv("CROSSBAR_EP_IDX_MAX_BYTES", "1000000")
    with pytest.raises(DataError, match=r"bomb.gz: more than 1000000 bytes.*"
                                        r"CROSSBAR_EP_IDX_MAX_BYTES"):
        D.read_idx(str(p))


def test_fashion_mnist_gz_files_are_pinned(tmp_path, monkeypatch):
    """A Fashion-MNIST file passes when its .gz is Zalando's release or its payload is the
    pinned one (Debian's package repacks the gzip); anything else is refused, naming both."""
    make_fake_dataset(tmp_path / "fashion-mnist")
    assert set(D.SHA256_GZ["fashion-mnist"]) == set(D.FILES)
    assert set(D.MD5_REPACKED["fashion-mnist"]) == set(D.FILES)
    with pytest.raises(DataError, match=r"MD5 of the decompressed data is [0-9a-f]{32}, "
                                        r"expected f4a8712d.*\(and SHA-256 is [0-9a-f]{64}, "
                                        r"expected 08dc20ab"):
        D.load_idx_dataset("fashion-mnist", str(tmp_path), allow_download=False)
    # a repacked file whose payload is the pinned one passes; so does the pinned .gz
    import hashlib
    folder = tmp_path / "fashion-mnist"
    payloads = {part: gzip.decompress((folder / (stem + ".gz")).read_bytes())
                for part, stem in D.FILES.items()}
    monkeypatch.setitem(D.MD5_REPACKED, "fashion-mnist",
                        {p: hashlib.md5(b).hexdigest() for p, b in payloads.items()})
    arrays, _ = D.load_idx_dataset("fashion-mnist", str(tmp_path), allow_download=False)
    assert arrays["train_images"].ndim == 3
    monkeypatch.setitem(D.MD5_REPACKED, "fashion-mnist", {p: "0" * 32 for p in payloads})
    monkeypatch.setitem(D.SHA256_GZ, "fashion-mnist", {
        p: hashlib.sha256((folder / (s + ".gz")).read_bytes()).hexdigest()
        for p, s in D.FILES.items()})
    D.load_idx_dataset("fashion-mnist", str(tmp_path), allow_download=False)


# -- 4. clear errors instead of tracebacks ---------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (b"name: caf\xe9\n", r"not UTF-8 text \(byte 0xe9 at offset 9\)"),
    (b"", "the experiment file is empty"),
    (b"# only a comment\n", "the experiment file is empty"),
    (b"- a\n- b\n", "must hold a mapping of sections .* got list"),
    (b"42\n", "must hold a mapping of sections .* got int"),
    (b"training: {epochs: " + b"9" * 5000 + b"}\n", "a value cannot be converted"),
])
def test_malformed_experiment_files(tmp_path, capsys, content, message):
    p = tmp_path / "e.yaml"
    p.write_bytes(content)
    err = cli_error(capsys, "validate", str(p))
    assert str(p) in err
    assert __import__("re").search(message, err), err


def test_directory_as_experiment(tmp_path, capsys):
    err = cli_error(capsys, "validate", str(tmp_path))
    assert f"{tmp_path}: is a directory" in err


@pytest.mark.parametrize("override, message", [
    ("training.epochs", "expected KEY=VALUE"),
    ("training.nope=3", r"unknown key 'training.nope'; \(training has algorithm"),
    ("trainig.epochs=3", "did you mean 'training'?"),
    ("model.hidden.x=3", "'model.hidden' is a value, not a section"),
    ("training.epochs=[1,", "value is not valid YAML"),
    ("=3", "empty key"),
])
def test_bad_set_overrides(capsys, override, message):
    err = cli_error(capsys, "validate", EXP, "--set", override)
    assert f"--set {override}" in err
    assert __import__("re").search(message, err), err


def test_set_accepts_mapping_names_and_shorthands():
    c = load_config(EXP, ["crossbar.device_params.up_down=0.1", "model.hidden=[8,8,8,8]",
                          "model.residual=every-3"])
    assert c.crossbar.device_params == {"up_down": 0.1} and c.model.residual.kind == "every-3"


def test_validate_subprocess_has_no_traceback(tmp_path):
    """The real entry point, as a user runs it."""
    p = tmp_path / "bomb.yaml"
    p.write_text("description:\n" + bomb())
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-m", "crossbar_ep.cli", "validate", str(p)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "100000 YAML nodes" in r.stderr


def test_yamlio_clip():
    assert yamlio.clip("abc", 5) == "abc" and yamlio.clip("a" * 300) == "a" * 200 + "..."

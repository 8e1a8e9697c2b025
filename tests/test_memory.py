"""Peak memory known up front: the estimate from the config against peak RSS measured in
fresh processes, and runs the machine cannot hold refused before anything is created
(docs/limits.md, "Memory")."""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO, small_config

from crossbar_ep.cli import main
from crossbar_ep.config.memory import GIB, check_memory, estimate
from crossbar_ep.errors import ConfigError

MEASURE = """
import json, sys
sys.path.insert(0, {tests!r})
from conftest import small_config
from crossbar_ep.runs import train
cfg = small_config(**json.loads(sys.argv[1]))
run = train.setup(cfg, "unused")
train.train_epoch(run, 1, progress=False)
with open("/proc/self/status") as fh:     # this process's own high-water mark (ru_maxrss
    hwm = [l for l in fh if l.startswith("VmHWM:")][0]   # also counts the parent at fork)
print(int(hwm.split()[1]) * 1024)
"""
WIDE = {"data": {"synthetic_features": 784, "synthetic_train": 200, "synthetic_test": 100},
        "training": {"epochs": 1, "batch_size": 100, "T": 4, "K": 2}}


def _spec(hidden, **training):
    return {"data": WIDE["data"], "model": {"hidden": hidden},
            "training": {**WIDE["training"], **training}}


def _measured_peak(spec) -> float:
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c",
                          MEASURE.format(tests=os.path.join(REPO, "tests")), json.dumps(spec)],
                         env=env, capture_output=True, text=True, timeout=600, check=True)
    return float(out.stdout.split()[-1])


TINY = _spec([8], dtype="float32")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("spec", [
    _spec([1500, 1500], dtype="float32"),                         # EP, Adam
    _spec([1500, 1500], dtype="float64", algorithm="bp"),         # BP twin
    {**_spec([600, 600], dtype="float32", optimizer="sgd"),       # ECRAM crossbar arrays
     "crossbar": {"enabled": True,
                  "device": os.path.join(REPO, "device_models", "ecram_li_tang2018.yaml")}},
], ids=["ep-adam-f32", "bp-f64", "crossbar-ecram"])
def test_estimate_matches_measured_peak(spec):
    """The peak RSS of a fresh process moves by some tens of MiB with Numba's compile cache;
    what a net adds over a tiny one of the same kind does not."""
    tiny = {**TINY, "crossbar": spec.get("crossbar", {}),
            "training": {**TINY["training"], **{k: v for k, v in spec["training"].items()
                                                 if k in ("dtype", "algorithm",
                                                          "optimizer")}}}
    base = _measured_peak(tiny)                   # also warms the compile cache
    peak = _measured_peak(spec)
    est, est0 = estimate(small_config(**spec)), estimate(small_config(**tiny))
    # a refusal must not come from an estimate far below the need, nor far above it
    assert 0.85 <= est["peak"] / peak <= 1.6, (est["peak"] / 2**20, peak / 2**20)
    grown, est_grown = peak - base, est["peak"] - est0["peak"]
    assert 0.9 <= est_grown / grown <= 1.45, (est_grown / 2**20, grown / 2**20)


def test_too_big_a_net_is_refused_before_anything_exists(tmp_path, capsys):
    exp = tmp_path / "wide.yaml"
    raw = small_config().to_dict()
    raw["model"]["hidden"] = [30000, 30000]
    raw["data"]["synthetic_features"] = 784
    exp.write_text(yaml.safe_dump(raw))
    out = tmp_path / "r"
    t = time.monotonic()
    rc = main(["run", str(exp), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "the run needs about" in err and "9.24e+08 weights" in err
    assert "--set training.memory_limit_gib=" in err
    assert time.monotonic() - t < 20
    assert not out.exists()                              # no folder, not even run.lock


def test_the_limit_key_and_its_hint(tmp_path, capsys):
    cfg = small_config(training={"memory_limit_gib": 0.01})
    with pytest.raises(ConfigError, match=r"the limit training.memory_limit_gib = 0.01; .*"
                                          r"--set training.memory_limit_gib=0.\d"):
        check_memory(cfg)
    assert check_memory(small_config(training={"memory_limit_gib": 0})) is None   # no check
    big = small_config(model={"hidden": [3000, 3000]})
    with pytest.raises(ConfigError, match="GiB available on this machine"):
        check_memory(big, available=0.1 * GIB)
    check_memory(big, available=64 * GIB)                       # fits: no error
    # the refusal's hint, followed, runs
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump(small_config(training={"epochs": 1}).to_dict()))
    rc = main(["run", str(exp), "--out", str(tmp_path / "r"), "--quiet", "--set",
               "training.memory_limit_gib=0.01"])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "r").exists()
    hint = err.split("set the limit: ")[1].split()[:2]
    assert hint[0] == "--set"
    assert main(["run", str(exp), "--out", str(tmp_path / "r"), "--quiet", *hint]) == 0


def test_limit_is_not_part_of_the_run_identity(tmp_path):
    from crossbar_ep.runs.rundir import config_hash, hashed_config
    a = small_config()
    b = small_config(training={"memory_limit_gib": 12.5})
    assert config_hash(hashed_config(a)) == config_hash(hashed_config(b))

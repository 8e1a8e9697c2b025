"""Sweeps: expansion and validation, local pool and Dask LocalCluster agree, failures are
recorded, resume runs only missing points, tables and figures."""

import csv
import os

import pytest
import yaml
from conftest import REPO

from crossbar_ep.errors import ConfigError
from crossbar_ep.runs.sweep import load_sweep, read_results, run_sweep

RPU = os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")
METRICS = ("best_test_acc", "final_test_acc", "final_train_acc", "best_epoch", "pulses_total")


def write_base(folder):
    base = folder / "base.yaml"
    base.write_text(yaml.safe_dump({
        "name": "tinysweep",
        "data": {"dataset": "synthetic", "synthetic_features": 12, "synthetic_classes": 3,
                 "synthetic_train": 150, "synthetic_test": 60},
        "model": {"hidden": [8]},
        "training": {"optimizer": "sgd", "lr": 0.1, "epochs": 1, "batch_size": 50, "T": 4,
                     "K": 3},
        "crossbar": {"enabled": True, "device": RPU,
                     "periphery": {"dac_bits": 7, "adc_bits": 9, "read_noise": 0.01}}}))
    return base


def write_sweep(folder, **extra):
    write_base(folder)
    spec = {"base": "base.yaml", "set": {"training.epochs": 1},
            "grid": {"crossbar.periphery.adc_bits": [5, 9],
                     "crossbar.device_params.n_states": [20, 400]},
            "seeds": [0, 1], "reference": True}
    spec.update(extra)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_expansion_grid_zip_random_seeds(tmp_path):
    s = load_sweep(str(write_sweep(tmp_path)))
    assert len(s.points) == 2 * 2 * 2 + 2                   # grid x seeds + references
    assert s.axes == ["crossbar.periphery.adc_bits", "crossbar.device_params.n_states"]
    assert len({p.point_id for p in s.points}) == len(s.points)
    assert "training.seed=1" in s.points[1].overrides
    ref = [p for p in s.points if p.kind == "reference"]
    assert len(ref) == 2 and "crossbar.enabled=false" in ref[0].overrides
    s2 = load_sweep(str(write_sweep(
        tmp_path, grid={"crossbar.periphery.adc_bits": [6, 8]},
        zip={"crossbar.device": [RPU, os.path.join(REPO, "device_models", "ideal.yaml")],
             "crossbar.update.lr": [0.1, 0.2]},
        random={"n": 3, "seed": 4, "params": {
            "crossbar.periphery.read_noise": {"log_uniform": [1e-3, 1e-1]}}},
        seeds=[0], reference=False)))
    assert len(s2.points) == 2 * 2 * 3
    noise = [p.params["crossbar.periphery.read_noise"] for p in s2.points]
    assert all(1e-3 <= v <= 1e-1 for v in noise) and len(set(noise)) == 3


@pytest.mark.parametrize("extra, match", [
    ({"grid": {"crossbar.periphery.adc_bitz": [5]}},
     r"point 0 .*crossbar.periphery.adc_bitz: unknown key; did you mean 'adc_bits'"),
    ({"grid": {"crossbar.periphery.adc_bits": []}},
     r"grid.crossbar.periphery.adc_bits: needs a non-empty list"),
    ({"zip": {"crossbar.periphery.adc_bits": [5, 6]}},
     r"zip.crossbar.periphery.adc_bits: also set in grid"),
    ({"zip": {"a.b": [1, 2], "c.d": [1]}}, r"zip: lists have different lengths"),
    ({"set": {"training.seed": 3}}, r"set.training.seed: conflicts with seeds"),
    ({"grid": {"crossbar.device_params.n_statez": [4]}},
     r"crossbar.device_params.n_statez: not a parameter .*did you mean 'n_states'"),
    ({"basis": "x.yaml"}, r"basis: unknown key; did you mean 'base'"),
])
def test_sweep_file_errors_name_the_path(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        load_sweep(str(write_sweep(tmp_path, **extra)))


def _metric_table(out):
    rows = read_results(str(out))
    return {r["point_id"]: tuple(r[m] for m in METRICS) + (r["status"],) for r in rows}


def test_local_pool_and_dask_cluster_give_identical_tables(tmp_path):
    pytest.importorskip("distributed")
    path = write_sweep(tmp_path, grid={"crossbar.periphery.adc_bits": [5, 9]},
                       seeds=[0, 1], reference=True)
    a = run_sweep(str(path), str(tmp_path / "local"), workers=2, progress=False,
                  log=lambda m: None)
    b = run_sweep(str(path), str(tmp_path / "dask"), dask_local=2, progress=False,
                  log=lambda m: None)
    assert len(a) == len(b) == 6 and all(r["status"] == "ok" for r in a)
    assert _metric_table(tmp_path / "local") == _metric_table(tmp_path / "dask")
    with open(tmp_path / "local" / "results.csv") as fh:
        header = next(csv.reader(fh))
    for col in ("point_id", "crossbar.periphery.adc_bits", "seed", "best_test_acc",
                "final_test_acc", "final_train_acc", "epochs", "pulses_total", "config_hash",
                "version", "host", "duration_s", "run_dir"):
        assert col in header
    import h5py
    with h5py.File(tmp_path / "local" / "results.h5", "r") as f:
        assert sorted(f) == sorted(header)
        assert f["best_test_acc"].shape == (6,)


def test_failed_point_is_recorded_and_resume_runs_only_missing(tmp_path):
    path = write_sweep(tmp_path, grid={"data.validation": [0, 100000]}, seeds=[0],
                       reference=False)
    out = tmp_path / "s"
    rows = run_sweep(str(path), str(out), workers=1, progress=False, log=lambda m: None)
    status = {r["data.validation"]: r for r in rows}
    assert status[0]["status"] == "ok"
    bad = status[100000]
    assert bad["status"] == "failed" and "DataError" in bad["error"]
    assert os.path.exists(os.path.join(bad["run_dir"], "error.txt"))
    # lose one finished row, as if the sweep was stopped before it finished
    text = (out / "results.csv").read_text().splitlines()
    (out / "results.csv").write_text("\n".join(t for t in text if ",failed," not in t) + "\n")
    mtime = os.path.getmtime(os.path.join(status[0]["run_dir"], "metrics.csv"))
    logs = []
    rows = run_sweep(str(path), str(out), workers=1, resume=True, progress=False,
                     log=logs.append)
    assert "1 already done, 1 to run" in logs[0]
    assert os.path.getmtime(os.path.join(status[0]["run_dir"], "metrics.csv")) == mtime
    assert sorted(r["status"] for r in rows) == ["failed", "ok"]
    with pytest.raises(ConfigError, match=r"already holds a sweep; add --resume"):
        run_sweep(str(path), str(out), progress=False, log=lambda m: None)


def test_sweep_cli_and_plots(tmp_path, capsys):
    from crossbar_ep.cli import main
    path = write_sweep(tmp_path, seeds=[0, 1], reference=True)
    out = tmp_path / "cli"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2", "--quiet"]) == 0
    assert "10 points (0 failed)" in capsys.readouterr().out
    assert main(["plot", str(out), "--out", str(tmp_path / "fig")]) == 0
    figs = sorted(os.listdir(tmp_path / "fig"))
    assert figs == ["best_test_acc_heatmap.png",
                    "best_test_acc_vs_crossbar_device_params_n_states.png",
                    "best_test_acc_vs_crossbar_periphery_adc_bits.png"]
    assert main(["sweep", str(path), "--out", str(out), "--resume", "--quiet"]) == 0
    assert main(["sweep", str(path), "--scheduler", "tcp://x", "--dask-local", "2"]) == 2


def test_shipped_sweep_files_are_valid():
    import glob
    files = [os.path.join(REPO, "experiments", "sweep_device_nonidealities.yaml"),
             *glob.glob(os.path.join(REPO, "experiments", "sweeps", "*.yaml"))]
    assert len(files) >= 9
    for f in files:
        s = load_sweep(f)
        assert s.points and s.axes, f

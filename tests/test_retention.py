"""crossbar-ep evaluate: accuracy over time after programming, compensation, faults, recovery;
reproducible repeats, resume, and the files it writes."""

import csv
import os

import numpy as np
import pytest
import yaml
from conftest import small_config

from crossbar_ep import cli
from crossbar_ep.errors import ConfigError
from crossbar_ep.runs import train
from crossbar_ep.runs.retention import RetentionPlan, parse_faults, parse_times
from crossbar_ep.runs.retention_report import evaluate_run


@pytest.fixture(scope="module")
def digital_run(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("ret") / "run")
    cfg = small_config(training={"epochs": 3, "dtype": "float32", "lr": 0.01},
                       data={"synthetic_test": 300})
    run = train.start(cfg, d)
    train.fit(run, progress=False)
    return d, run.history[-1]["test_acc"]


def card(tmp_path, **drift):
    """A drift-only card: exact writes, no programming or read noise, power-law drift."""
    path = tmp_path / "drift.yaml"
    path.write_text(yaml.safe_dump({"name": "drift test", "model": "ideal", "source": "test",
                                    "g_min_S": 0.0, "g_max_S": 1e-5,
                                    "drift": {"law": "power", "t0_s": 20.0, **drift}}))
    return str(path)


def test_times_and_faults_parse_and_refuse_nonsense():
    assert parse_times("1s,1h,1d,1mo,1y,10y")[-1] == ("10y", 10 * 31557600.0)
    assert parse_times("0.5,2min")[1][1] == 120.0
    for bad in ("1h,1s", "1s,1s", "1 parsec", ""):
        with pytest.raises(ConfigError, match="--times"):
            parse_times(bad)
    assert parse_faults("stuck_off=0.01,stuck_on=0.02") == (0.01, 0.02)
    for bad in ("stuck=0.1", "stuck_off=x", "stuck_off=0.8,stuck_on=0.5"):
        with pytest.raises(ConfigError, match="--faults"):
            parse_faults(bad)


def test_the_ideal_card_keeps_the_digital_accuracy_at_every_time(digital_run, tmp_path):
    run_dir, acc = digital_run
    plan = RetentionPlan(times=parse_times("1s,1y"), card="ideal")
    res = evaluate_run(run_dir, plan, str(tmp_path / "ideal"), progress=False)
    assert [r["test_acc"] for r in res["rows"]] == [acc, acc]


def test_uniform_drift_costs_weight_scale_and_compensation_restores_it(digital_run, tmp_path):
    """Every device drifting with one exponent scales every weight by the same factor:
    without compensation the weights shrink by ((t + t0)/t0)^-nu (w_rel_err 1 - factor);
    global compensation from the calibration read restores them exactly."""
    run_dir, acc = digital_run
    nu = 0.1
    plan = RetentionPlan(times=parse_times("1s,1d,1y"), card=card(tmp_path, nu_mean=nu),
                         compensation=("none", "global", "column"))
    res = evaluate_run(run_dir, plan, str(tmp_path / "drift"), progress=False)
    rows = {(r["mode"], r["time"]): r for r in res["rows"]}
    for label, t in plan.times:
        shrink = ((t + 20.0) / 20.0) ** -nu
        assert rows[("none", label)]["w_rel_err_mean"] == pytest.approx(1 - shrink, rel=1e-4)
        for mode in ("global", "column"):
            assert rows[(mode, label)]["w_rel_err_mean"] < 1e-5
            assert rows[(mode, label)]["test_acc"] == acc
            assert rows[(mode, label)]["calibration_reads"] > 0
    assert rows[("none", "1y")]["calibration_reads"] == 0


def test_repeats_are_seeded_resume_and_files(digital_run, tmp_path, capsys):
    run_dir, _ = digital_run
    out = str(tmp_path / "pcm")
    args = ["evaluate", run_dir, "--card", "pcm_joshi2020_inference", "--times", "1s,1mo,10y",
            "--repeats", "3", "--compensation", "none,global", "--out", out, "--quiet"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "compensation global" in printed and "10y" in printed
    with open(os.path.join(out, "retention.csv")) as fh:
        first = list(csv.DictReader(fh))
    assert len(first) == 2 * 3 * 3
    accs = {(r["mode"], r["repeat"], r["time"]): float(r["test_acc"]) for r in first}
    assert len({accs[("none", str(k), "10y")] for k in range(3)}) > 1   # repeats differ
    for name in ("retention.h5", "retention.md", "retention.png", "plan.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    import h5py
    with h5py.File(os.path.join(out, "retention.h5")) as f:
        assert f["global/repeat_2/10y/W0/g_pos_mean_S"][()] > 0
    # an interrupted evaluation: drop the last unit, run again, same rows
    with open(os.path.join(out, "retention.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(first[0]))
        w.writeheader()
        w.writerows(first[:-3])
    assert cli.main(args) == 0
    with open(os.path.join(out, "retention.csv")) as fh:
        again = list(csv.DictReader(fh))
    assert again == first
    # another plan in the same folder is refused without --overwrite
    assert cli.main(args[:-3] + ["--times", "1s", "--out", out, "--quiet"]) == 2
    assert "another plan" in capsys.readouterr().err


def test_faults_and_the_three_remedies(digital_run, tmp_path):
    """All devices stuck: chance accuracy, reprogramming cannot help (they stay stuck);
    with half the devices failing on an ideal pulse-free card, in-situ EP on the damaged
    arrays raises the accuracy, and the rows carry its pulses."""
    run_dir, acc = digital_run
    plan = RetentionPlan(times=parse_times("1s"), card="ideal", faults=(1.0, 0.0),
                         recover=(0, 5), recover_at=("1s",))
    res = evaluate_run(run_dir, plan, str(tmp_path / "dead"), progress=False)
    assert res["rows"][0]["test_acc"] <= 0.4
    rem = {(r["remedy"], r["batches"]): r["test_acc"] for r in res["recovery"]}
    assert rem[("reprogram", 0)] == rem[("nothing", 0)]
    plan = RetentionPlan(times=parse_times("1s"), card="rpu_gokmen2016",
                         overrides=("crossbar.update.lr=0.05",), faults=(0.2, 0.2),
                         recover=(0, 20, 60), recover_at=("1s",))
    res = evaluate_run(run_dir, plan, str(tmp_path / "half"), progress=False)
    rec = [r for r in res["recovery"] if r["remedy"] == "in_situ"]
    assert [r["batches"] for r in rec] == [0, 20, 60]
    assert rec[-1]["pulses"] > 0 and rec[-1]["program_J"] > 0
    assert rec[-1]["test_acc"] > res["rows"][0]["test_acc"]


def test_a_digital_run_needs_a_card(digital_run, capsys):
    run_dir, _ = digital_run
    assert cli.main(["evaluate", run_dir, "--times", "1s", "--quiet"]) == 2
    assert "--card" in capsys.readouterr().err


def test_a_refused_evaluation_writes_nothing_so_the_corrected_one_runs(digital_run, tmp_path,
                                                                       capsys):
    run_dir, _ = digital_run
    out = tmp_path / "refused"
    base = ["evaluate", run_dir, "--card", "pcm_joshi2020_inference", "--times", "1s",
            "--out", str(out), "--quiet"]
    assert cli.main(base + ["--set", "crossbar.tile_rows=0"]) == 2
    assert "tile_rows" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())          # no plan left behind
    assert cli.main(base) == 0                                 # the corrected command runs
    assert (out / "retention.csv").exists()


def test_the_python_api_evaluates_a_run_directory(digital_run, tmp_path):
    import crossbar_ep as cx
    run_dir, acc = digital_run
    res = cx.evaluate(run_dir, times="1s,1y", card="ideal", out=str(tmp_path / "api"))
    assert [r["test_acc"] for r in res["rows"]] == [acc, acc]
    assert "compensation none" in res["table"]


def test_a_copied_learner_settles_like_the_original():
    """Recovery works on deep copies of the learner: the copy's work buffers (views into each
    other) are rebuilt, so its phases equal the original's on new data."""
    import copy
    import crossbar_ep as cx
    net = cx.make_network([12, 10, 8, 3], seed=0, beta_i=0.2)
    model = cx.ep_learner(net, T=12, K=6)
    rng = np.random.default_rng(0)
    model.settle(rng.random((5, 12)).astype(np.float32))
    twin = copy.deepcopy(model)
    x = rng.random((5, 12)).astype(np.float32)
    for a, b in zip(model.settle(x).s[1:], twin.settle(x).s[1:]):
        np.testing.assert_array_equal(a, b)

"""`crossbar-ep summary`: a table of many runs, checked against the metrics it was given."""

import csv
import os

import pytest

from crossbar_ep import cli
from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.runs.summary import parse_epochs, summarise_run, summary_table


def _write_run(path, accs, heads=None, times=None):
    path.mkdir()
    cols = ["epoch", "train_loss", "test_acc", "val_acc", "epoch_time_s", "samples_per_s"]
    heads = heads or {}
    cols += [f"head_acc_{h}" for h in heads]
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i, a in enumerate(accs):
            t = (times or [10.0] * len(accs))[i]
            w.writerow([i + 1, 0.5, a, "", t, 6000.0 / t] + [v[i] for v in heads.values()])
    return str(path)


def test_summary_values(tmp_path):
    accs = [0.90, 0.95, 0.97, 0.96, 0.97, 0.955]
    run = _write_run(tmp_path / "r1", accs, heads={"A3": [0.8, 0.9, 0.93, 0.92, 0.91, 0.9]},
                     times=[10, 20, 30, 40, 50, 60])
    s = summarise_run(run, epochs=(1, 5, 10))
    assert s["run"] == "r1" and s["epochs"] == 6
    assert s["best"] == pytest.approx(97.0) and s["best_epoch"] == 3   # the first epoch at best
    assert s["final"] == pytest.approx(95.5)
    assert s["at"][1] == pytest.approx(90.0) and s["at"][5] == pytest.approx(97.0)
    assert s["at"][10] != s["at"][10]                                  # NaN: not reached
    assert s["epoch_time_s"] == pytest.approx(35.0)
    assert s["heads"] == {"A3": pytest.approx(93.0)}


def test_summary_table_md_and_csv(tmp_path):
    a = _write_run(tmp_path / "a", [0.5, 0.6])
    b = _write_run(tmp_path / "b", [0.7], heads={"A6": [0.65]})
    md = summary_table([a, b], epochs=(1, 2)).splitlines()
    assert md[0].startswith("| run | epochs | best test %") and "head A6 best %" in md[0]
    assert md[2].split(" | ")[:5] == ["| a", "2", "60.00", "2", "60.00"]
    assert md[3].rstrip(" |").endswith("65.00") and " - " in md[3]    # b has no epoch 2
    rows = list(csv.reader(summary_table([a, b], epochs=(1,), fmt="csv").splitlines()))
    assert rows[1][0] == "a" and rows[2][2] == "70.00"


def test_summary_reads_a_csv_file(tmp_path):
    run = _write_run(tmp_path / "c", [0.4, 0.8])
    s = summarise_run(run + "/metrics.csv")
    assert s["best"] == pytest.approx(80.0) and s["run"] == "c"
    (tmp_path / "c" / "metrics.csv").rename(tmp_path / "mnist_10hl_res.csv")
    assert summarise_run(str(tmp_path / "mnist_10hl_res.csv"))["run"] == "mnist_10hl_res"


def test_summary_errors_are_clear(tmp_path, capsys):
    with pytest.raises(CrossbarEPError, match="no metrics.csv"):
        summarise_run(str(tmp_path))
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CrossbarEPError, match="needs the columns epoch and test_acc"):
        summarise_run(str(tmp_path / "x.csv"))
    with pytest.raises(CrossbarEPError, match="--at"):
        parse_epochs("1,five")
    assert cli.main(["summary", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_summary_cli_prints_the_table_and_plots(tmp_path, capsys):
    run = _write_run(tmp_path / "r", [0.91, 0.93])
    other = _write_run(tmp_path / "s", [0.80, 0.85, 0.90])
    (tmp_path / "starting").mkdir()                      # a run with no epoch finished yet
    png = tmp_path / "acc.png"
    assert cli.main(["summary", run, other, str(tmp_path / "starting"), "--at", "2",
                     "--plot", str(png), "--train"]) == 0
    out, err = capsys.readouterr()
    assert "| r | 2 | 93.00 | 2 | 93.00 | 93.00 |" in out and "starting" not in out
    assert "skipped" in err and "starting: no metrics.csv" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["summary", run, "--plot", str(tmp_path / "no" / "dir.png")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_summary_takes_head_accuracies_from_metrics_json(tmp_path):
    import json
    run = _write_run(tmp_path / "h", [0.90, 0.92])
    rows = [{"epoch": 1, "test_acc": 0.90, "head_acc_A3": 0.85, "ds_L1": None},
            {"epoch": 2, "test_acc": 0.92, "head_acc_A3": 0.88, "ds_L1": 1e-3}]
    (tmp_path / "h" / "metrics.json").write_text(json.dumps(rows))
    assert summarise_run(run)["heads"] == {"A3": pytest.approx(88.0)}
    s = summarise_run(str(tmp_path / "h" / "metrics.json"))
    assert s["run"] == "h" and s["best"] == pytest.approx(92.0)
    (tmp_path / "bad.json").write_text('{"epoch": 1}')
    with pytest.raises(CrossbarEPError, match="list of per-epoch objects"):
        summarise_run(str(tmp_path / "bad.json"))


def _with_config(run_dir, name="exp", seed=0, **training):
    """A run directory's config.yaml: name, training (seed and the given keys), traces."""
    import yaml
    cfg = {"name": name, "description": f"seed {seed}", "data": {"dir": f"/d{seed}"},
           "training": {"seed": seed, "lr": 0.001, **training},
           "traces": {"enabled": seed % 2 == 0}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_group_by_seed_means_and_sample_sd(tmp_path):
    import statistics
    runs = []
    for seed, accs in enumerate([[0.90, 0.95], [0.91, 0.97], [0.93, 0.96]]):
        runs.append(_write_run(tmp_path / f"a{seed}", accs))
        _with_config(tmp_path / f"a{seed}", seed=seed)
    other = _write_run(tmp_path / "b", [0.80, 0.85])
    _with_config(tmp_path / "b", seed=0, lr=0.01)           # another config: its own group
    md = summary_table(runs + [other], epochs=(1,), group_by="seed").splitlines()
    assert md[0].startswith("| group | n | seeds | epochs | best test % |")
    rows = {r.split(" | ")[0][2:]: r.split(" | ") for r in md[2:]}
    assert set(rows) == {"exp training.lr=0.001", "exp training.lr=0.01"}   # no collision
    a = rows["exp training.lr=0.001"]
    best = [95.0, 97.0, 96.0]
    assert a[1:4] == ["3", "0,1,2", "2"]
    assert a[4] == f"{statistics.mean(best):.2f} ± {statistics.stdev(best):.2f}"
    assert a[5] == "2"
    e1 = [90.0, 91.0, 93.0]
    assert a[7] == f"{statistics.mean(e1):.2f} ± {statistics.stdev(e1):.2f}"
    assert rows["exp training.lr=0.01"][4] == "85.00"        # one run: no sd


def test_group_by_seed_from_file_names_and_sidecar_configs(tmp_path):
    import shutil
    for seed, accs in [(0, [0.5, 0.6]), (1, [0.7, 0.8]), (2, [0.6, 0.6])]:
        d = _write_run(tmp_path / f"r{seed}", accs)
        name = "net.csv" if seed == 0 else f"net_s{seed}.csv"
        shutil.copy(os.path.join(d, "metrics.csv"), tmp_path / name)
    d = _write_run(tmp_path / "c", [0.4])
    shutil.copy(os.path.join(d, "metrics.csv"), tmp_path / "cfg_run.csv")
    _with_config(tmp_path / "c", name="withcfg", seed=4)
    shutil.copy(tmp_path / "c" / "config.yaml", tmp_path / "cfg_run.config.yaml")
    files = [str(tmp_path / n) for n in ("net_s2.csv", "cfg_run.csv", "net.csv", "net_s1.csv")]
    md = summary_table(files, epochs=(1,), group_by="seed").splitlines()
    assert [r.split(" | ")[0][2:] for r in md[2:]] == ["net", "withcfg"]   # natural order
    net = md[2].split(" | ")
    assert net[1:3] == ["3", "0,1,2"] and net[4] == "66.67 ± 11.55"
    assert md[3].split(" | ")[2] == "4"                       # the sidecar's seed


def test_group_by_seed_plot_and_cli_into(tmp_path, capsys):
    runs = []
    for seed in range(2):
        runs.append(_write_run(tmp_path / f"g{seed}", [0.8 + 0.01 * seed, 0.9]))
        _with_config(tmp_path / f"g{seed}", seed=seed)
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\n<!-- results-table:start old -->\nold table\n"
                   "<!-- results-table:end -->\ntail\n")
    png = tmp_path / "bands.png"
    pattern = str(tmp_path / "g*")
    assert cli.main(["summary", pattern, "--group-by", "seed", "--at", "1", "--into",
                     str(doc), "--plot", str(png)]) == 0
    text = doc.read_text()
    assert text.startswith("# Doc\n\n<!-- results-table:start crossbar-ep summary ")
    assert "--group-by seed --at 1 -->\n" in text and text.endswith("-->\ntail\n")
    assert "| exp | 2 | 0,1 | 2 | 90.00 ± 0.00 |" in text and "old table" not in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from crossbar_ep.runs.doc_tables import read_block
    args, _ = read_block(str(doc))
    assert args == [pattern, "--group-by", "seed", "--at", "1"]
    (tmp_path / "plain.md").write_text("no markers\n")
    assert cli.main(["summary", runs[0], "--into", str(tmp_path / "plain.md")]) == 2
    assert "results-table:start" in capsys.readouterr().err
    assert cli.main(["summary", str(tmp_path / "zz*")]) == 2
    assert "no run directory or metrics file matches" in capsys.readouterr().err


def test_group_series_is_mean_and_range(tmp_path):
    from crossbar_ep.runs.seed_groups import group_runs, group_series
    from crossbar_ep.runs.summary import _run_name, read_metrics
    runs = []
    for seed, accs in enumerate([[0.5, 0.7], [0.7, 0.8], [0.6]]):   # seed 2 stopped early
        runs.append(_write_run(tmp_path / f"q{seed}", accs))
        _with_config(tmp_path / f"q{seed}", seed=seed)
    (ep, mean, lo, hi, n), = group_series(group_runs(runs, _run_name), read_metrics).values()
    assert ep == [1, 2] and n == [3, 2]
    assert mean == pytest.approx([60.0, 75.0]) and lo == pytest.approx([50.0, 70.0])
    assert hi == pytest.approx([70.0, 80.0])


def test_group_by_seed_reads_a_missing_key_as_its_default(tmp_path):
    """A config written before a key existed groups with one that states the key's default;
    one that sets another value stays apart, labelled by that key alone."""
    from crossbar_ep.config.experiment import TrainingConfig
    default_mul = TrainingConfig().weight_noise_mul
    old = _write_run(tmp_path / "old", [0.90])
    _with_config(tmp_path / "old", seed=0)                       # no weight_noise_mul key
    new = _write_run(tmp_path / "new", [0.92])
    _with_config(tmp_path / "new", seed=1, weight_noise_mul=default_mul)
    other = _write_run(tmp_path / "other", [0.80])
    _with_config(tmp_path / "other", seed=0, weight_noise_mul=default_mul + 0.5)
    md = summary_table([old, new, other], epochs=(1,), group_by="seed").splitlines()
    rows = {r.split(" | ")[0][2:]: r.split(" | ") for r in md[2:]}
    assert set(rows) == {f"exp training.weight_noise_mul={default_mul}",
                         f"exp training.weight_noise_mul={default_mul + 0.5}"}
    assert rows[f"exp training.weight_noise_mul={default_mul}"][1:3] == ["2", "0,1"]

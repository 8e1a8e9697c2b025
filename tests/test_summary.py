"""`crossbar-ep summary`: a table of many runs, checked against the metrics it was given."""

import csv

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

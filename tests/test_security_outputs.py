"""Writes that fail (a full disk during the traces write, read-only or full folders for
figures, a closed pipe), inputs that would block (FIFOs), the process environment, names
that hide characters, and progress output in logs: one clear message, never a traceback or
a crash (docs/limits.md)."""

import io
import json
import os
import stat
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, small_config

from crossbar_ep.cli import main
from crossbar_ep.errors import ConfigError
from crossbar_ep.runs import train
from crossbar_ep.runs.progress import LogProgress, progress_bar

CARD = os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")
ROOT = sys.platform.startswith("linux") and os.geteuid() == 0


def env(**extra):
    return {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", **extra}


def cli_proc(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "crossbar_ep.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=kw.pop("timeout", 300),
                          env=kw.pop("env", env()), **kw)


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


@pytest.fixture
def tmpfs(tmp_path):
    """A 128 MiB tmpfs (root only), unmounted afterwards."""
    if not ROOT:
        pytest.skip("needs root to mount a tmpfs")
    m = tmp_path / "m"
    m.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(m)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield m
    subprocess.run(["umount", "-l", str(m)], capture_output=True)


def fill(folder, leave=64 * 1024):
    """Fill ``folder``'s file system but ``leave`` bytes (a ballast file in ``folder``)."""
    st = os.statvfs(folder)
    with open(os.path.join(folder, "ballast"), "wb") as fh:
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def experiment(tmp_path, name="e.yaml", **sections):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(small_config(**sections).to_dict()))
    return p


# ---------------------------------------------------------------- 6: full disk in the traces write
FILL_DURING_TRACES = """
import collections, os, shutil, sys
from crossbar_ep.io import traces
real = traces.Recorder.end_epoch

def end_epoch(self, row):              # another process fills the disk during epoch 2
    if row["epoch"] == 2:
        folder = os.path.dirname(os.path.dirname(os.path.abspath(self.path)))
        st = os.statvfs(folder)
        with open(os.path.join(folder, "ballast"), "wb") as fh:
            fh.write(b"\\0" * max(0, st.f_bavail * st.f_frsize - 96 * 1024))
    return real(self, row)

traces.Recorder.end_epoch = end_epoch
U = collections.namedtuple("U", "total used free")
shutil.disk_usage = lambda p: U(1 << 40, 0, 1 << 40)    # the run's own estimate: room
from crossbar_ep.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_full_disk_during_the_traces_write_is_a_clear_error(tmpfs, tmp_path):
    exp = experiment(tmp_path, training={"epochs": 3, "optimizer": "sgd", "lr": 0.05},
                     traces={"enabled": True, "batches": [0, 1, 2, 3], "samples": 50},
                     model={"hidden": [200, 200]})
    d = tmpfs / "r"
    done = subprocess.run([sys.executable, "-c", FILL_DURING_TRACES, "run", str(exp), "--out",
                           str(d), "--quiet"], env=env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])     # not 139
    assert "Traceback" not in done.stderr and "h5py" not in done.stderr, done.stderr[-2000:]
    assert "disk is" in done.stderr and "full" in done.stderr
    assert f"crossbar-ep run --resume {d}" in done.stderr
    os.unlink(tmpfs / "ballast")
    again = cli_proc("run", "--resume", d, "--quiet")
    assert again.returncode == 0, again.stderr
    from crossbar_ep.io.traces import open_run
    with open_run(str(d)) as tr:
        assert tr.epochs == [1, 2, 3]


# ---------------------------------------------------------------- 11: remaining tracebacks
@pytest.fixture(scope="module")
def a_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs") / "r"
    run = train.start(small_config(training={"epochs": 1}), str(d))
    train.fit(run, progress=False)
    run.lock.release()
    return d


def test_plot_on_a_full_or_read_only_disk_leaves_no_empty_png(a_run, tmpfs, capsys):
    import shutil
    d = tmpfs / "r"
    shutil.copytree(a_run, d)
    fill(tmpfs, leave=4096)
    rc, err = cli(capsys, "plot", d)
    assert rc == 2 and "cannot write the figures" in err and "disk is full" in err, err
    assert not [p for p in (d / "figures").glob("*.png")] if (d / "figures").exists() else True
    rc, err = cli(capsys, "device", "plot", CARD, "--out", tmpfs / "p.png")
    assert rc == 2 and "disk is full" in err and not (tmpfs / "p.png").exists(), err
    os.unlink(tmpfs / "ballast")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    rc, err = cli(capsys, "plot", d)
    assert rc == 2 and "read-only" in err, err


def test_small_cli_errors_are_messages(a_run, tmp_path, capsys):
    rc, err = cli(capsys, "diagnose", a_run, "--jacobian-samples", "0")
    assert rc == 2 and "--jacobian-samples need at least 1" in err
    rc, err = cli(capsys, "summary", a_run, "--plot", tmp_path / "s.png", "--ymin", "nan")
    assert rc == 2 and "--ymin nan: give a finite accuracy" in err
    rc, err = cli(capsys, "device", "plot", CARD, "--out", "/dev/full")
    assert rc == 2 and "not a regular file" in err
    bare = tmp_path / "bare"
    bare.mkdir()
    rows = json.loads((a_run / "metrics.json").read_text())
    (bare / "metrics.json").write_text(json.dumps([{k: v for k, v in r.items()
                                                    if k != "train_loss"} for r in rows]))
    rc, err = cli(capsys, "plot", bare)
    assert rc == 2 and "lack train_loss" in err


def test_corrupt_checkpoint_with_epochs_leaves_config_untouched(tmp_path, capsys):
    d = tmp_path / "r"
    run = train.start(small_config(training={"epochs": 1}), str(d))
    train.fit(run, progress=False)
    run.lock.release()
    data = bytearray((d / "checkpoint.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF                          # a flipped byte inside an array
    (d / "checkpoint.npz").write_bytes(bytes(data))
    before = (d / "config.yaml").read_bytes()
    rc, err = cli(capsys, "run", "--resume", d, "--epochs", "4", "--quiet")
    assert rc == 2 and "unreadable checkpoint" in err, err
    assert (d / "config.yaml").read_bytes() == before


def test_process_environment_and_closed_pipe(a_run):
    done = cli_proc("validate", os.path.join(REPO, "experiments", "quickstart.yaml"),
                    env=env(NUMBA_NUM_THREADS="0"))
    assert done.returncode == 2 and "NUMBA_NUM_THREADS='0'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    done = cli_proc("plot", a_run, env=env(MPLBACKEND="garbage"))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    proc = subprocess.Popen([sys.executable, "-m", "crossbar_ep.cli", "device", "info", CARD],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                                    # `| head` that has exited
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "Broken" not in err, err


# ---------------------------------------------------------------- 12: smaller
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_inputs_do_not_block(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for argv in (("run", fifo, "--out", tmp_path / "r"), ("validate", fifo),
                 ("sweep", fifo, "--out", tmp_path / "s"), ("inspect", fifo)):
        done = cli_proc(*argv, timeout=60)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (argv, done.stderr)
        assert "FIFO" in done.stderr, done.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\u2066", "\ufeff"],
                         ids=["rlo", "zwsp", "lri", "bom"])
def test_names_with_hidden_characters_are_refused(tmp_path, char):
    raw = small_config().to_dict()
    raw["name"] = f"run{char}gnp.exe"
    from crossbar_ep.config.experiment import config_from_dict
    from crossbar_ep.runs.rundir import check_name
    with pytest.raises(ConfigError, match=rf"U\+{ord(char):04X}"):
        check_name(config_from_dict(raw, "x.yaml"))
    card = tmp_path / "card.yaml"
    text = open(CARD, encoding="utf-8").read()
    card.write_text(text.replace("name: ", f"name: x{char}", 1))
    from crossbar_ep.devices.card import load_card
    with pytest.raises(ConfigError, match="invisible formatting character"):
        load_card(str(card))


def test_nearly_full_disk_is_found_before_the_first_epoch(tmp_path, monkeypatch):
    d = str(tmp_path / "r")
    run = train.start(small_config(training={"epochs": 2}), d)
    usage = train.shutil.disk_usage(d)
    monkeypatch.setattr(train.shutil, "disk_usage", lambda p: usage._replace(free=1 << 20))
    monkeypatch.setattr(train, "train_epoch", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(train.RunWriteError, match=r"only 1 MiB free, epoch 1 needs"):
        train.fit(run, progress=False)


def test_run_refused_at_the_card_stage_leaves_no_folder(tmp_path, capsys):
    card = tmp_path / "card.yaml"
    card.write_text(open(CARD, encoding="utf-8").read().replace("dw_min:", "dw_min: -1 #"))
    exp = tmp_path / "e.yaml"
    raw = small_config(training={"epochs": 1}).to_dict()
    raw["crossbar"].update(enabled=True, device=str(card))
    exp.write_text(yaml.safe_dump(raw))
    out = tmp_path / "r"
    rc, err = cli(capsys, "run", exp, "--out", out, "--quiet")
    assert rc == 2 and str(card) in err, err
    assert not out.exists()


def test_progress_in_a_log_is_a_few_lines():
    buf = io.StringIO()
    bar = LogProgress(1000, "epoch 1/3", "batch", buf)
    for i in range(1000):
        bar.update(1)
        bar.set_postfix(loss="0.5", refresh=False)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert 10 <= len(lines) <= 12 and "\r" not in buf.getvalue()
    assert lines[-1].startswith("epoch 1/3: 100% (1000/1000 batches") and "loss=0.5" in lines[-1]
    slow = io.StringIO()
    bar = LogProgress(1000, "sweep", "point", slow, every_s=0.0)     # a line per minute
    bar.update(1)
    assert len(slow.getvalue().splitlines()) == 1
    assert isinstance(progress_bar(5, "x", "batch", io.StringIO()), LogProgress)


def test_run_output_to_a_log_file_has_few_progress_lines(tmp_path):
    exp = experiment(tmp_path, training={"epochs": 2, "batch_size": 5})      # 80 batches
    done = cli_proc("run", exp, "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.startswith("epoch ")]
    assert 2 <= len(lines) <= 2 * 12 and "\r" not in done.stderr

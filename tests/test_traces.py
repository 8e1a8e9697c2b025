"""HDF5 traces: schema and units, values against independent references, crash safety,
resume, I/O errors, h5dump, and the inspect / plot commands."""

import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import yaml
from conftest import REPO, small_config

from crossbar_ep.config.build import build_network
from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery
from crossbar_ep.devices.card import load_card
from crossbar_ep.errors import ConfigError
from crossbar_ep.io.traces import TraceError, _TileProbe, open_run
from crossbar_ep.api import settler
from crossbar_ep.model.settle import settle_reference
from crossbar_ep.runs import train

RPU = os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")
IDEAL = os.path.join(REPO, "device_models", "ideal.yaml")


def traced_config(**over):
    sections = {"training": {"optimizer": "sgd", "lr": 0.1, "epochs": 3},
                "crossbar": {"enabled": True, "device": RPU, "tile_rows": 16, "tile_cols": 16,
                             "periphery": {"dac_bits": 7, "adc_bits": 9, "read_noise": 0.01}},
                "traces": {"enabled": True, "tiles": ["W1:0:0"], "samples": 4,
                           "batches": [0, -1], "every_epochs": 2}}
    for k, v in over.items():
        sections.setdefault(k, {}).update(v)
    return small_config(**sections)


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("traced") / "run")
    run = train.start(traced_config(), d)
    train.fit(run, progress=False)
    return d, run


def test_schema_units_and_cadence(traced_run):
    d, run = traced_run
    with open_run(d) as tr:
        assert tr.epochs == [1, 2, 3]
        assert tr.version and tr.schema_version == 1
        assert tr.config["traces"]["samples"] == 4
        m = tr.metrics
        np.testing.assert_allclose(m["test_acc"], [r["test_acc"] for r in run.history])
        assert m["pulses_total"].shape == (3,)
        # detailed records in epochs 1 and 2 (every_epochs 2), not 3
        assert tr.batches(1) == [0, 7] and tr.batches(2) == [0, 7] and tr.batches(3) == []
        assert tr.matrices(3) == [] and tr.matrices(2) == ["W0", "W1", "Wf"]
        assert len(tr.settle(3)["free_steps"]) == 8        # every epoch: per-batch statistics
        assert np.all(tr.settle(1)["nudged_steps"] == 6)
        free, nudged = tr.trajectories(1, 0, "free"), tr.trajectories(1, 0, "nudged")
        assert free[1].shape == (9, 4, 24) and nudged[2].shape == (7, 4, 16)
        assert not free[1][0].any()                          # free phase starts at s = 0
        np.testing.assert_array_equal(nudged[1][0], free[1][-1])  # nudged starts there
        g = tr.conductance(2, "W1")
        card = load_card(RPU)
        assert g["G_pos"].shape == (16, 24)
        assert g["G_pos"].min() >= 0 and g["G_pos"].max() <= card.g_max_S * 1.5
        tot = tr.pulse_totals(1)["W1"]
        assert tot.dtype.kind == "i" and tot.sum() > 0
        assert np.all(np.abs(tr.batch_pulses(1, 0)["W1"]) <= tot)
        reads = tr.tile_reads(1, 0, "W1_r0_c0", "forward")
        assert reads["current_A"].shape == (14, 4, 16)      # T + K reads of this tile
        assert list(reads["phase"]) == [0] * 8 + [1] * 6
        assert np.abs(reads["adc_code"]).max() <= 255
    with h5py.File(os.path.join(d, "traces.h5"), "r") as f:
        def check(name, obj):
            if isinstance(obj, h5py.Dataset):
                for a in ("units", "description", "dims"):
                    assert a in obj.attrs, f"{name} lacks {a}"
        f.visititems(check)
        assert f["epochs/0001/conductance/W1/G_pos"].compression == "gzip"


def test_h5dump_reads_the_file(traced_run):
    exe = shutil.which("h5dump")
    if exe is None:
        pytest.skip("h5dump not installed: apt-get install -y hdf5-tools (.ci/run does this)")
    path = os.path.join(traced_run[0], "traces.h5")
    out = subprocess.run([exe, "-d", "/epochs/0001/settle/free_steps", path],
                         capture_output=True, text=True, check=True).stdout
    assert "DATASET \"/epochs/0001/settle/free_steps\"" in out and "H5T_STD_I32LE" in out
    subprocess.run([exe, "-H", path], capture_output=True, check=True)
    full = subprocess.run([exe, path], capture_output=True, text=True, check=True).stdout
    assert "units" in full and "G_pos" in full


def test_trajectory_hook_matches_numpy_reference():
    cfg = small_config(model={"hidden": [12, 10, 8]})
    net = build_network(cfg, 20, 4, np.random.default_rng(0))
    st = settler(net, T=7, K=3)

    class Stub:
        def __init__(self):
            self.snaps = []

        def on_phase(self, nudged, S):
            self.snaps.append([S[k].copy() for k in sorted(S)])

        def on_step(self, S):
            self.snaps.append([S[k].copy() for k in sorted(S)])

    x = np.random.default_rng(1).random((5, 20))
    stub = Stub()
    st.observers.append(stub)
    st.free(x)
    assert len(stub.snaps) == 8
    for t, snap in enumerate(stub.snaps):
        ref = settle_reference(net, x, t)
        for k in range(3):
            np.testing.assert_allclose(snap[k], ref[k + 1], atol=1e-12)


def test_tile_probe_currents_and_codes_against_conductances():
    card = load_card(IDEAL)
    rng = np.random.default_rng(2)
    W = rng.uniform(-0.5, 0.5, (20, 30))
    per = Periphery(dac_bits=7, adc_bits=12, v_read_V=0.2, input_range=1.0)
    cb = CrossbarMatrix(W, card, rng, per, tile_rows=16, tile_cols=8, dtype=np.float64)
    probe = _TileProbe(3, cb.current_factor())
    cb.watch_tile((1, 2), probe)
    x = rng.uniform(-1, 1, (6, 30))
    y = cb.forward(x)
    (phase, current, codes), = probe.reads["forward"]
    xq = np.clip(np.rint(x * 63) / 63, -1, 1)
    V = xq[:3, 16:30] * 0.2                                # volts on rows 16..29
    G = cb.pos.conductance() - cb.neg.conductance()        # siemens
    np.testing.assert_allclose(current, V @ G[16:24, 16:30].T, rtol=1e-6)
    full_scale = cb.fwd_range[(16, 16)]
    step = full_scale / 2047
    ref_codes = np.rint(np.clip(xq[:3, 16:30] @ cb.W_eff[16:24, 16:30].T, -full_scale,
                                full_scale) / step)
    np.testing.assert_array_equal(codes, ref_codes)
    assert y.shape == (6, 20)


def test_resume_trims_epochs_the_checkpoint_lacks(tmp_path):
    d = str(tmp_path / "r")
    cfg = traced_config(training={"epochs": 2})
    first = train.start(cfg, d)
    train.fit(first, progress=False)
    with open_run(d) as tr:                   # the stored conductances give the weights
        g = tr.conductance(2, "W1")
        with h5py.File(tr.path, "r") as f:
            a = dict(f["epochs/0002/conductance/W1"].attrs)
    W = a["weight_scale"] * (g["G_pos"].astype(float) - g["G_neg"]) / (a["g_max_S"] -
                                                                         a["g_min_S"])
    np.testing.assert_allclose(W, first.net.W["W1"], atol=1e-6 * a["weight_scale"])
    shutil.copy(os.path.join(d, "checkpoint.npz"), tmp_path / "ck2.npz")
    train.fit(train.resume(d, epochs=3), progress=False)
    with open_run(d) as tr:
        assert tr.epochs == [1, 2, 3]
        third = tr.metrics["test_acc"][2]
    # as if killed after the epoch-3 traces were written but before its checkpoint
    shutil.copy(tmp_path / "ck2.npz", os.path.join(d, "checkpoint.npz"))
    run = train.resume(d, epochs=3)
    with open_run(d) as tr:
        assert tr.epochs == [1, 2] and tr.metrics["test_acc"].shape == (2,)
    train.fit(run, progress=False)
    with open_run(d) as tr:
        assert tr.epochs == [1, 2, 3]
        assert tr.metrics["test_acc"][2] == pytest.approx(third)   # resumes exactly


def test_disk_full_stops_with_message_and_keeps_checkpoint(tmp_path, monkeypatch):
    import errno

    d = str(tmp_path / "full")
    run = train.start(traced_config(), d)
    real = h5py.File
    calls = {"n": 0}

    def flaky(path, mode="r", *a, **k):
        if mode == "a":
            calls["n"] += 1
            if calls["n"] == 2:                               # epoch 2's write
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, mode, *a, **k)

    monkeypatch.setattr(h5py, "File", flaky)
    with pytest.raises(TraceError, match=r"disk is full.*checkpoint of the last completed epoch is kept.*--resume"):
        train.fit(run, progress=False)
    monkeypatch.setattr(h5py, "File", real)
    resumed = train.resume(d)
    assert resumed.epochs_done == 1
    train.fit(resumed, progress=False)
    with open_run(d) as tr:
        assert tr.epochs == [1, 2, 3]


def test_unwritable_trace_path_fails_before_training(tmp_path):
    d = tmp_path / "bad"
    (d / "traces.h5").mkdir(parents=True)                    # a folder where the file goes
    with pytest.raises(TraceError, match=r"traces.h5: the trace file is a folder, not a regular "
                       r"file.*rm -r"):
        train.start(traced_config(), str(d), overwrite=True)  # not empty: needs overwrite


def test_trace_config_errors():
    with pytest.raises(ConfigError, match=r"traces.tiles\[0\]: 'W1-0-0': expected MATRIX"):
        traced_config(traces={"tiles": ["W1-0-0"]})
    with pytest.raises(ConfigError, match=r"traces.tiles\[0\]: no matrix 'W7'"):
        traced_config(traces={"tiles": ["W7:0:0"]})
    with pytest.raises(ConfigError, match=r"traces.file: .*plain file name"):
        traced_config(traces={"file": "../x.h5"})
    with pytest.raises(ConfigError, match=r"traces.compression: .*<= 9"):
        traced_config(traces={"compression": 12})


def test_inspect_and_plot_commands(traced_run, tmp_path, capsys):
    from crossbar_ep.cli import main
    d = traced_run[0]
    assert main(["inspect", d]) == 0
    out = capsys.readouterr().out
    assert "G_pos  (16, 24) float32  [S]" in out and "@schema_version = 1" in out
    assert main(["plot", d, "--out", str(tmp_path / "fig")]) == 0
    names = sorted(os.listdir(tmp_path / "fig"))
    assert names == ["conductance_histograms.png", "curves.png", "device_pulse_response.png",
                     "layer_signals.png", "pulse_heatmaps.png", "trajectories.png"]
    assert main(["inspect", str(tmp_path / "nope.h5")]) == 2


def _write_experiment(path, out_epochs):
    path.write_text(yaml.safe_dump({
        "name": "killme",
        "data": {"dataset": "synthetic", "synthetic_features": 40, "synthetic_classes": 4,
                 "synthetic_train": 6000, "synthetic_test": 200},
        "model": {"hidden": [64, 48]},
        "training": {"optimizer": "sgd", "lr": 0.05, "epochs": out_epochs, "batch_size": 20,
                     "T": 10, "K": 6},
        "crossbar": {"enabled": True, "device": RPU,
                     "periphery": {"dac_bits": 7, "adc_bits": 9, "read_noise": 0.01}},
        "traces": {"enabled": True, "tiles": ["W1:0:0"], "batches": [0, 100]}}))


def test_sigkill_mid_epoch_leaves_readable_file_and_resume_appends(tmp_path):
    exp = tmp_path / "k.yaml"
    _write_experiment(exp, 20)
    d = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "crossbar_ep.cli", "run", str(exp),
                             "--out", str(d), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = d / "metrics.csv"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        else:
            pytest.fail("no epoch finished in time")
        time.sleep(0.5)                                     # into the next epoch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with open_run(str(d)) as tr:
        done = tr.epochs
        assert done and done == list(range(1, len(done) + 1))
        for e in done:                                       # every completed epoch intact
            assert tr.conductance(e, "W1")["G_pos"].shape == (48, 64)
            assert tr.trajectories(e, 0, "free")[1].shape[0] == 11
            assert len(tr.settle(e)["free_steps"]) == 300
        assert tr.metrics["test_acc"].shape == (len(done),)
    ck = train.resume(str(d), epochs=len(done) + 1)
    n_ck = ck.epochs_done
    train.fit(ck, progress=False)
    with open_run(str(d)) as tr:
        assert tr.epochs == list(range(1, n_ck + 2))
        assert np.all(np.isfinite(tr.metrics["test_acc"]))

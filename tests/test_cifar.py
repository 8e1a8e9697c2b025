"""CIFAR-10 loader: the python-pickle layout on tiny files the test writes; a missing or
corrupt folder gives a DataError naming where it looked and how to get the data."""

import os
import pickle

import numpy as np
import pytest

from crossbar_ep.errors import DataError
from crossbar_ep.io.cifar import TEST_FILE, TRAIN_FILES, load_cifar10
from crossbar_ep.io.data import load_dataset


def write_cifar(folder, n=4, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    parts = {}
    for name in (*TRAIN_FILES, TEST_FILE):
        d = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
             b"filenames": [b"x.png"] * n}
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump(d, fh, protocol=2)
        parts[name] = d
    return parts


def test_loads_pickle_layout_and_normalises(tmp_path, isolated_data_env):
    parts = write_cifar(tmp_path / "cifar-10-batches-py")
    arrays, folder = load_cifar10(str(tmp_path))
    assert folder.endswith("cifar-10-batches-py")
    assert arrays["x_train"].shape == (20, 3072) and arrays["x_test"].shape == (4, 3072)
    np.testing.assert_array_equal(arrays["x_train"][4:8], parts["data_batch_2"][b"data"])
    np.testing.assert_array_equal(arrays["y_test"], parts[TEST_FILE][b"labels"])
    from types import SimpleNamespace
    cfg = SimpleNamespace(dataset="cifar10", dir=str(tmp_path), download=False, validation=0,
                          train_subset=None, test_subset=None, mean=[0.5, 0.4, 0.3],
                          std=[0.2, 0.25, 0.5])
    ds = load_dataset(cfg, np.float64)
    raw = parts[TEST_FILE][b"data"].reshape(4, 3, 1024) / 255.0
    want = (raw - np.array([0.5, 0.4, 0.3])[None, :, None]) / np.array([0.2, 0.25, 0.5])[None, :, None]
    np.testing.assert_allclose(ds.x_test, want.reshape(4, 3072))
    assert ds.n_classes == 10


def test_missing_folder_lists_where_it_looked(tmp_path, isolated_data_env):
    with pytest.raises(DataError) as e:
        load_cifar10(str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "cifar10 not found" in msg and str(tmp_path / "nowhere") in msg
    assert "cifar-10-batches-py" in msg and "data.dir" in msg
    assert "per-user cache" in msg


def test_corrupt_or_hostile_files_fail_cleanly(tmp_path, isolated_data_env):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    with open(folder / "data_batch_3", "wb") as fh:
        fh.write(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 python batch"):
        load_cifar10(str(tmp_path))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(DataError, match="refusing to load"):
        load_cifar10(str(tmp_path))
    write_cifar(folder)
    d = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    with open(folder / TEST_FILE, "wb") as fh:
        pickle.dump(d, fh)
    with pytest.raises(DataError, match=r"must be uint8 of shape \(N, 3072\)"):
        load_cifar10(str(tmp_path))


def write_cifar100(folder, n=5, seed=1):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    parts = {}
    for name in ("train", "test"):
        d = {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(),
             b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
             b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
             b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8)}
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump(d, fh, protocol=2)
        parts[name] = d
    return parts


def test_cifar100_loads_the_fine_labels(tmp_path, isolated_data_env):
    from types import SimpleNamespace

    from crossbar_ep.io.cifar import load_cifar100
    parts = write_cifar100(tmp_path / "cifar-100-python")
    arrays, folder = load_cifar100(str(tmp_path))
    assert folder.endswith("cifar-100-python")
    np.testing.assert_array_equal(arrays["x_train"], parts["train"][b"data"])
    np.testing.assert_array_equal(arrays["y_test"], parts["test"][b"fine_labels"])
    cfg = SimpleNamespace(dataset="cifar100", dir=str(tmp_path), download=False, validation=0,
                          train_subset=None, test_subset=None, mean=None, std=None)
    ds = load_dataset(cfg, np.float64)
    np.testing.assert_allclose(ds.x_test, parts["test"][b"data"] / 255.0)
    assert ds.n_classes == 100 and ds.x_train.shape == (5, 3072)


def test_cifar100_errors(tmp_path, isolated_data_env):
    from crossbar_ep.io.cifar import load_cifar100
    with pytest.raises(DataError, match="(?s)cifar100 not found.*cifar-100-python"):
        load_cifar100(str(tmp_path / "nowhere"))
    folder = tmp_path / "cifar-100-python"
    parts = write_cifar100(folder)
    d = dict(parts["test"])
    d[b"fine_labels"] = [100] * 5
    with open(folder / "test", "wb") as fh:
        pickle.dump(d, fh, protocol=2)
    with pytest.raises(DataError, match=r"(?s)labels outside 0\.\.99.*cifar-100-python.tar.gz"):
        load_cifar100(str(tmp_path))
    del d[b"fine_labels"]
    with open(folder / "test", "wb") as fh:
        pickle.dump(d, fh, protocol=2)
    with pytest.raises(DataError, match="'fine_labels' must list one integer per image"):
        load_cifar100(str(tmp_path))


def test_cifar_experiment_files_load_and_train_on_tiny_files(tmp_path, isolated_data_env):
    """The shipped CIFAR experiments validate; the conv file normalises as the authors'
    notebook (std divided by three times), and a dense file trains one step on tiny data."""
    from crossbar_ep.config.experiment import load_config
    from crossbar_ep.runs import train
    repo = os.path.join(os.path.dirname(__file__), "..", "experiments")
    conv = load_config(os.path.join(repo, "cifar10_conv.yaml"))
    assert conv.data.std == pytest.approx((3 * 0.2023, 3 * 0.1994, 3 * 0.2010))
    write_cifar(tmp_path / "cifar-10-batches-py", n=6)
    write_cifar100(tmp_path / "cifar-100-python", n=6)
    names = ["cifar10_5hl.yaml", "cifar10_5hl_bp.yaml", "cifar10_5hl_asym.yaml",
             "cifar10_5hl_fa.yaml", "cifar10_10hl.yaml", "cifar10_10hl_res.yaml",
             "cifar10_10hl_agt.yaml", "cifar10_10hl_asym.yaml", "cifar10_20hl_res.yaml",
             "cifar100_5hl.yaml"]
    for name in names:
        cfg = load_config(os.path.join(repo, name),
                          [f"data.dir={tmp_path}", "training.epochs=1", "training.batch_size=6",
                           "traces.enabled=false", "data.test_subset=6"])
        assert cfg.data.mean is None and cfg.training.lr == pytest.approx(2e-4), name
        if name in ("cifar10_5hl.yaml", "cifar100_5hl.yaml"):
            run = train.setup(cfg, "unused")
            row = train.train_epoch(run, 1, progress=False)
            assert run.net.sizes[0] == 3072 and 0.0 <= row["test_acc"] <= 1.0
            assert run.net.sizes[-1] == (100 if "100" in name else 10)

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

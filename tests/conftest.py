"""Shared fixtures: tiny IDX files written by the tests, small configs."""

import gzip
import os
import struct

import numpy as np
import pytest

from crossbar_ep.config.experiment import config_from_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX payload (type code 0x08)."""
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_idx(path, arr, compress=True):
    data = idx_bytes(arr)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(data)
        return str(path) + ".gz"
    with open(path, "wb") as fh:
        fh.write(data)
    return str(path)


def make_fake_dataset(folder, n_train=60, n_test=20, compress=True, seed=0):
    """Four IDX files of 28x28 uint8 images and labels 0..9 in ``folder``."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for stem, arr in parts.items():
        write_idx(os.path.join(folder, stem), arr.astype(np.uint8), compress)
    return parts


def small_config(**sections):
    """A synthetic-data config for fast tests; ``sections`` override raw YAML sections."""
    raw = {
        "name": "tiny",
        "data": {"dataset": "synthetic", "synthetic_features": 20, "synthetic_classes": 4,
                 "synthetic_train": 400, "synthetic_test": 200},
        "model": {"hidden": [24, 16], "beta_i": 0.05},
        "training": {"epochs": 2, "batch_size": 50, "T": 8, "K": 6, "lr": 0.005,
                     "dtype": "float64", "seed": 3},
    }
    for sec, vals in sections.items():
        raw.setdefault(sec, {}).update(vals)
    return config_from_dict(raw, "tiny.yaml")


@pytest.fixture
def isolated_data_env(tmp_path, monkeypatch):
    """No data reachable: empty cache, no CROSSBAR_EP_DATA, no download."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CROSSBAR_EP_DATA", raising=False)
    return tmp_path

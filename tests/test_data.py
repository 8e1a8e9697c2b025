import gzip
import hashlib
import os

import numpy as np
import pytest
from conftest import idx_bytes, make_fake_dataset, write_idx

from crossbar_ep.config.experiment import config_from_dict
from crossbar_ep.errors import DataError
from crossbar_ep.io import data as D


@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip(tmp_path, compress):
    arr = np.random.default_rng(0).integers(0, 256, (7, 28, 28)).astype(np.uint8)
    path = write_idx(tmp_path / "x-idx3-ubyte", arr, compress)
    out = D.read_idx(path)
    assert out.shape == (7, 28, 28) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


def test_idx_labels_1d(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(D.read_idx(write_idx(tmp_path / "l", arr)), arr)


def test_idx_bad_magic(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 12)
    with pytest.raises(DataError, match=r"bad IDX magic number 12340801.*not an IDX file"):
        D.read_idx(str(p))


def test_idx_truncated(tmp_path):
    payload = idx_bytes(np.zeros((5, 4, 4), np.uint8))[:-7]
    p = tmp_path / "trunc.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(payload)
    with pytest.raises(DataError) as e:
        D.read_idx(str(p))
    assert str(e.value) == (f"{p}: IDX payload has 73 bytes but its header (5, 4, 4) needs 80; "
                            "the file is truncated or corrupt: delete it and fetch it again")


def test_idx_truncated_gzip_stream(tmp_path):
    blob = gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    p = tmp_path / "cut.gz"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="cannot read"):
        D.read_idx(str(p))


def test_lookup_order_and_load(tmp_path, isolated_data_env, monkeypatch):
    env_dir = tmp_path / "envdata"
    make_fake_dataset(env_dir / "mnist", n_train=30, n_test=10)
    cfg_dir = tmp_path / "cfgdata"
    make_fake_dataset(cfg_dir, n_train=40, n_test=10, compress=False)
    monkeypatch.setenv("CROSSBAR_EP_DATA", str(env_dir))
    monkeypatch.setitem(D.MD5, "mnist", {})  # fake files: structure only
    folder, _ = D.locate("mnist", None)
    assert folder == str(env_dir / "mnist")
    folder, _ = D.locate("mnist", str(cfg_dir))  # data.dir wins over the environment
    assert folder == str(cfg_dir)
    dcfg = config_from_dict({"data": {"dir": str(cfg_dir), "validation": 10,
                                      "train_subset": 25}}).data
    ds = D.load_dataset(dcfg)
    assert ds.x_train.shape == (25, 784) and ds.x_val.shape == (10, 784)
    assert ds.x_test.shape == (10, 784) and ds.x_train.dtype == np.float32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_missing_data_lists_every_place(isolated_data_env, monkeypatch):
    monkeypatch.setattr(D, "search_bases", lambda d: [("data.dir in the config", "/nowhere/a"),
                                                      ("per-user cache", "/nowhere/b")])
    with pytest.raises(DataError) as e:
        D.load_idx_dataset("fashion-mnist", "/nowhere/a", allow_download=False)
    msg = str(e.value)
    for place in ("/nowhere/a/fashion-mnist (data.dir in the config)",
                  "/nowhere/a (data.dir in the config)", "/nowhere/b/fashion-mnist (per-user cache)"):
        assert place in msg
    assert "Fix: set data.dir" in msg and "dataset-fashion-mnist" in msg


def test_checksum_mismatch(tmp_path, isolated_data_env):
    make_fake_dataset(tmp_path / "mnist")
    with pytest.raises(DataError, match=r"MD5 of the decompressed data is [0-9a-f]{32}, expected"):
        D.load_idx_dataset("mnist", str(tmp_path), allow_download=False)


def test_download_verifies_and_is_atomic(tmp_path, monkeypatch):
    """The download path against a fake mirror: good files land, a corrupt one does not."""
    src = tmp_path / "mirror"
    parts = make_fake_dataset(src)
    md5 = {p: hashlib.md5(idx_bytes(parts[stem].astype(np.uint8))).hexdigest()
           for p, stem in D.FILES.items()}
    monkeypatch.setitem(D.MD5, "mnist", md5)
    monkeypatch.setitem(D.MIRRORS, "mnist", ("file://" + str(src) + "/",))
    folder = D.download("mnist", str(tmp_path / "cache"))
    assert sorted(os.listdir(folder)) == sorted(s + ".gz" for s in D.FILES.values())
    bad = dict(md5, train_labels="0" * 32)
    monkeypatch.setitem(D.MD5, "mnist", bad)
    with pytest.raises(DataError, match="download failed"):
        D.download("mnist", str(tmp_path / "cache2"))
    assert not any(f.endswith(".part") for f in os.listdir(tmp_path / "cache2" / "mnist"))


def test_synthetic_is_seeded():
    a = D.synthetic(8, 3, 50, 10)
    b = D.synthetic(8, 3, 50, 10)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert set(np.unique(a.y_train)) <= {0, 1, 2}


def test_real_mnist_checksums_if_present():
    folder, _ = D.locate("mnist", None)
    if folder is None:
        pytest.skip("MNIST not available (set CROSSBAR_EP_DATA)")
    arrays, _ = D.load_idx_dataset("mnist", None, allow_download=False)
    counts = np.bincount(arrays["train_labels"], minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

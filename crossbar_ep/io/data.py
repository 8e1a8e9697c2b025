"""Data sets: IDX reader (gzip or raw), data-directory lookup, verified download, splits.

Images come out as float arrays (N, 784) scaled to [0, 1]; labels as int64 (N,).
Lookup order for a data set's folder: ``data.dir`` from the config, ``$CROSSBAR_EP_DATA``,
the per-user cache (``$XDG_CACHE_HOME/crossbar-ep`` or ``~/.cache/crossbar-ep``), then
``/usr/share/datasets`` (where Debian's ``dataset-fashion-mnist`` installs).  In each base
folder the files may sit in ``<base>/<dataset>/`` or directly in ``<base>``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import struct
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass

import numpy as np

from crossbar_ep.errors import CrossbarEPError, DataError
from crossbar_ep.io.data_dirs import search_bases, user_cache_dir  # noqa: F401

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: MD5 of the decompressed IDX payloads (MNIST: ../shared/data/README.md; Fashion-MNIST:
#: the payloads published by Zalando Research).
MD5 = {
    "mnist": {
        "train_images": "6bbc9ace898e44ae57da46a324031adb",
        "train_labels": "a25bea736e30d166cdddb491f175f624",
        "test_images": "2646ac647ad5339dbf082846283269ea",
        "test_labels": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {},  # the .gz files are pinned instead (SHA256_GZ, MD5_REPACKED)
}

#: MD5 of the decompressed payloads of a .gz file that is not the pinned release
#: (SHA256_GZ) but a repack of it: Debian's dataset-fashion-mnist (0.0~git20200523.55506a9)
#: recompresses Zalando's files with other gzip headers.  Such a .gz passes when its payload
#: matches here.
MD5_REPACKED = {
    "fashion-mnist": {
        "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
        "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
        "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

#: SHA-256 of the published gzip files, checked when a file is the .gz (Fashion-MNIST:
#: the four files of Zalando Research's release, as served by its S3 mirror and GitHub).
SHA256_GZ = {
    "fashion-mnist": {
        "train_images": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
        "train_labels": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
        "test_images": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
        "test_labels": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
    },
}

#: Largest decompressed IDX file read (MNIST's largest is 47 MB); guards against gzip bombs.
MAX_IDX_BYTES_ENV, MAX_IDX_BYTES = "CROSSBAR_EP_IDX_MAX_BYTES", 1 << 30
N_CLASSES = 10   # MNIST and Fashion-MNIST labels are 0..9

MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(payload: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode an IDX payload (already decompressed) into an array of its stored shape."""
    if len(payload) < 4:
        raise DataError(f"{name}: file too short for an IDX header ({len(payload)} bytes)")
    zero, code, ndim = payload[0] << 8 | payload[1], payload[2], payload[3]
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DataError(f"{name}: bad IDX magic number {payload[:4].hex()} (expected 0000 "
                        f"followed by a type code 08-0e and the number of dimensions); the "
                        f"file is not an IDX file or is corrupt: delete it and fetch it again")
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(f"{name}: truncated IDX header; delete the file and fetch it again")
    shape = struct.unpack(f">{ndim}I", payload[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    expected = math.prod(shape) * dtype.itemsize   # exact: huge dims cannot wrap around
    got = len(payload) - header
    if got != expected:
        raise DataError(f"{name}: IDX payload has {got} bytes but its header {shape} needs "
                        f"{expected}; the file is truncated or corrupt: delete it and fetch "
                        f"it again")
    return np.frombuffer(payload, dtype=dtype, offset=header).reshape(shape)


def _idx_cap() -> int:
    from crossbar_ep.yamlio import limit
    try:
        return limit(MAX_IDX_BYTES_ENV, MAX_IDX_BYTES)
    except CrossbarEPError as exc:
        raise DataError(str(exc)) from None


def _too_big(name: str, cap: int) -> DataError:
    return DataError(f"{name}: more than {cap} bytes (decompressed); not an MNIST-style IDX "
                     f"file. If it is genuine, raise the limit: export {MAX_IDX_BYTES_ENV}=N")


def unpack_idx_bytes(blob: bytes, name: str) -> bytes:
    """``blob`` itself, or its decompressed bytes if it is gzip (at most the size limit)."""
    if blob[:2] != b"\x1f\x8b":
        return blob
    cap = _idx_cap()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as fh:
            payload = fh.read(cap + 1)
    except (OSError, EOFError, zlib.error) as exc:   # BadGzipFile is an OSError
        raise DataError(f"{name}: cannot read the gzip stream ({exc}); the file is corrupt or "
                        f"truncated: delete it and fetch it again") from None
    if len(payload) > cap:
        raise _too_big(name, cap)
    return payload


def read_file_bytes(path: str) -> bytes:
    """The bytes of a data file as stored (at most the size limit)."""
    cap = _idx_cap()
    try:
        with open(path, "rb") as fh:
            blob = fh.read(cap + 1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(blob) > cap:
        raise _too_big(path, cap)
    return blob


def read_idx_bytes(path: str) -> bytes:
    """The decompressed bytes of an IDX file (``.gz`` or raw), at most
    ``$CROSSBAR_EP_IDX_MAX_BYTES`` (default 1 GiB)."""
    return unpack_idx_bytes(read_file_bytes(path), path)


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a NumPy array."""
    return parse_idx(read_idx_bytes(path), path)


def _find_file(folder: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    return None


def locate(dataset: str, config_dir: str | None = None) -> tuple[str | None, list[str]]:
    """The first folder holding all four files of ``dataset``, and every folder searched."""
    searched = []
    for origin, base in search_bases(config_dir):
        for folder in (os.path.join(base, dataset), base):
            searched.append(f"{folder} ({origin})")
            if all(_find_file(folder, stem) for stem in FILES.values()):
                return folder, searched
    return None, searched


def _sha256_gz_error(dataset: str, part: str, blob: bytes, path: str) -> str | None:
    """Check a .gz file's bytes against :data:`SHA256_GZ`: "" when they match, the mismatch
    message when they differ, None when nothing is pinned."""
    want = SHA256_GZ.get(dataset, {}).get(part)
    if want is None:
        return None
    got = hashlib.sha256(blob).hexdigest()
    return "" if got == want else f"{path}: SHA-256 is {got}, expected {want}"


def _check_md5(dataset: str, part: str, payload: bytes, path: str,
               gz_error: str | None = None) -> None:
    """Check the decompressed payload against :data:`MD5`.  ``gz_error``: the outcome of
    :func:`_sha256_gz_error` ("": the .gz is the pinned release, nothing more to check; a
    message: it is not, so the payload must match :data:`MD5_REPACKED`, as a repacked
    release's does)."""
    if gz_error == "":
        return
    pins = MD5_REPACKED if gz_error else MD5
    want = pins.get(dataset, {}).get(part)
    got = hashlib.md5(payload).hexdigest() if want is not None else None
    if want is not None and got != want:
        gz = f" (and {gz_error.split(': ', 1)[1]})" if gz_error else ""
        raise DataError(f"{path}: MD5 of the decompressed data is {got}, expected {want}{gz}; "
                        f"the file is corrupt or not the published {dataset}: delete it "
                        f"and fetch it again")
    if gz_error and want is None:
        raise DataError(f"{gz_error}; the file is corrupt or not the published {dataset}: "
                        f"delete it and fetch it again")


def download(dataset: str, dest: str, timeout: float = 60.0) -> str:
    """Fetch the four files from the public mirrors into ``dest``/``dataset`` (atomic)."""
    folder = os.path.join(dest, dataset)
    os.makedirs(folder, exist_ok=True)
    for part, stem in FILES.items():
        target = os.path.join(folder, stem + ".gz")
        if os.path.isfile(target):
            continue
        errors = []
        for mirror in MIRRORS[dataset]:
            url = mirror + stem + ".gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    blob = resp.read(_idx_cap() + 1)   # a .gz is smaller than its payload
                gz_error = _sha256_gz_error(dataset, part, blob, url)
                payload = unpack_idx_bytes(blob, url)
                parse_idx(payload, url)
                _check_md5(dataset, part, payload, url, gz_error)
            except Exception as exc:  # noqa: BLE001 - every mirror failure is reported
                errors.append(f"{url}: {exc}")
                continue
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            break
        else:
            raise DataError("download failed:\n  " + "\n  ".join(errors))
    return folder


@dataclass
class Dataset:
    """Train / validation / test splits; x in [0, 1] of shape (N, D), y int64 of shape (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    n_classes: int = 10
    origin: str = ""

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


def load_idx_dataset(dataset: str, config_dir: str | None = None,
                     allow_download: bool = True) -> tuple[dict, str]:
    """Raw uint8 arrays of the four parts and the folder they came from."""
    folder, searched = locate(dataset, config_dir)
    if folder is None and allow_download:
        try:
            folder = download(dataset, user_cache_dir())
        except DataError as exc:
            searched.append(f"download into {user_cache_dir()}: {exc}")
        except OSError as exc:
            searched.append(f"download into {user_cache_dir()}: {exc}")
    if folder is None:
        fix = ("set data.dir in the experiment file or CROSSBAR_EP_DATA to a folder holding "
               f"{dataset}/ with the four IDX files ({', '.join(s + '.gz' for s in FILES.values())})")
        if dataset == "fashion-mnist":
            fix += ", or install the Debian package dataset-fashion-mnist"
        raise DataError(f"{dataset} not found. Searched:\n  " + "\n  ".join(searched) +
                        f"\nFix: {fix}.")
    arrays, paths = {}, {}
    for part, stem in FILES.items():
        path = paths[part] = _find_file(folder, stem)
        blob = read_file_bytes(path)
        gz_error = _sha256_gz_error(dataset, part, blob, path) if path.endswith(".gz") \
            else None
        payload = unpack_idx_bytes(blob, path)
        _check_md5(dataset, part, payload, path, gz_error)
        arrays[part] = parse_idx(payload, path)
    check_arrays(arrays, paths)
    return arrays, folder


def check_arrays(arrays: dict, paths: dict) -> None:
    """Images (N, rows, cols) of uint8 with the same image size in both splits; labels (N,)
    of integers 0..9, one per image.  Fails naming the file at fault."""
    shapes = {}
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        px, py = paths[f"{split}_images"], paths[f"{split}_labels"]
        if xi.ndim != 3 or xi.dtype != np.uint8:
            raise DataError(f"{px}: expected images as unsigned bytes of shape (N, rows, cols), "
                            f"got {xi.dtype} {xi.shape}")
        if min(xi.shape) == 0:
            raise DataError(f"{px}: empty ({xi.shape}: no images, or images of 0 pixels)")
        if yi.ndim != 1 or yi.dtype.kind not in "iu":
            raise DataError(f"{py}: expected integer labels of shape (N,), got {yi.dtype} "
                            f"{yi.shape}")
        if xi.shape[0] != yi.shape[0]:
            raise DataError(f"{py}: {yi.shape[0]} labels for the {xi.shape[0]} images of {px}")
        bad = (yi < 0) | (yi >= N_CLASSES)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{py}: label {int(yi[i])} at index {i} is outside the classes "
                            f"0..{N_CLASSES - 1} ({int(bad.sum())} such labels)")
        shapes[split] = xi.shape[1:]
    if shapes["train"] != shapes["test"]:
        raise DataError(f"{paths['test_images']}: test images are {shapes['test'][0]}x"
                        f"{shapes['test'][1]} but the training images of "
                        f"{paths['train_images']} are {shapes['train'][0]}x"
                        f"{shapes['train'][1]}; both splits need the same image size")


def synthetic(n_features: int, n_classes: int, n_train: int, n_test: int,
              seed: int = 1234) -> Dataset:
    """A learnable set: class prototypes in [0, 1]^D plus noise, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    protos = rng.random((n_classes, n_features))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, n_classes, size=n)
        x = np.clip(protos[y] + 0.25 * rng.standard_normal((n, n_features)), 0.0, 1.0)
        return x, y.astype(np.int64)

    xt, yt = draw(n_train)
    xs, ys = draw(n_test)
    return Dataset("synthetic", xt, yt, xs, ys, n_classes=n_classes, origin="generated")


def normalise(x: np.ndarray, mean, std) -> np.ndarray:
    """(x - mean_c) / std_c per channel of flat channel-first images (N, C * pixels)."""
    if mean is None and std is None:
        return x
    C = len(mean if mean is not None else std)
    if x.shape[1] % C:
        raise DataError(f"data.mean / data.std: {C} channels do not divide the {x.shape[1]} "
                        f"values per image; give one value per image channel")
    v = np.array(x, dtype=float).reshape(x.shape[0], C, -1)
    if mean is not None:
        v -= np.asarray(mean, float)[None, :, None]
    if std is not None:
        v /= np.asarray(std, float)[None, :, None]
    return v.reshape(x.shape)


def load_dataset(data_cfg, dtype=np.float32, seed: int = 0) -> Dataset:
    """Build the :class:`Dataset` a config's ``data`` section describes."""
    if data_cfg.dataset == "synthetic":
        ds = synthetic(data_cfg.synthetic_features, data_cfg.synthetic_classes,
                       data_cfg.synthetic_train, data_cfg.synthetic_test)
    elif data_cfg.dataset in ("cifar10", "cifar100"):
        from crossbar_ep.io.cifar import load_cifar10, load_cifar100
        ten = data_cfg.dataset == "cifar10"
        a, folder = (load_cifar10 if ten else load_cifar100)(data_cfg.dir)
        ds = Dataset(data_cfg.dataset, a["x_train"] / 255.0, a["y_train"], a["x_test"] / 255.0,
                     a["y_test"], n_classes=N_CLASSES if ten else 100, origin=folder)
    else:
        arrays, folder = load_idx_dataset(data_cfg.dataset, data_cfg.dir, data_cfg.download)
        def flat(a):
            return a.reshape(a.shape[0], -1)
        ds = Dataset(data_cfg.dataset,
                     flat(arrays["train_images"]) / 255.0, arrays["train_labels"].astype(np.int64),
                     flat(arrays["test_images"]) / 255.0, arrays["test_labels"].astype(np.int64),
                     n_classes=int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1,
                     origin=folder)
    if data_cfg.validation:
        n = ds.x_train.shape[0]
        if data_cfg.validation >= n:
            raise DataError(f"data.validation: {data_cfg.validation} held-out samples leave "
                            f"none of the {n} training samples; use fewer")
        perm = np.random.default_rng(seed + 7919).permutation(n)
        val, tr = perm[:data_cfg.validation], np.sort(perm[data_cfg.validation:])
        ds.x_val, ds.y_val = ds.x_train[val], ds.y_train[val]
        ds.x_train, ds.y_train = ds.x_train[tr], ds.y_train[tr]
    if data_cfg.train_subset:
        ds.x_train, ds.y_train = ds.x_train[:data_cfg.train_subset], ds.y_train[:data_cfg.train_subset]
    if data_cfg.test_subset:
        ds.x_test, ds.y_test = ds.x_test[:data_cfg.test_subset], ds.y_test[:data_cfg.test_subset]
    mean, std = getattr(data_cfg, "mean", None), getattr(data_cfg, "std", None)
    for attr in ("x_train", "x_test", "x_val"):
        a = getattr(ds, attr)
        if a is not None:
            setattr(ds, attr, np.ascontiguousarray(normalise(a, mean, std), dtype=dtype))
    return ds

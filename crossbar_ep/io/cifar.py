"""CIFAR-10 and CIFAR-100 from user-supplied folders in the python-pickle layout.

CIFAR-100: a ``cifar-100-python`` folder holding ``train`` and ``test`` (dicts with ``data``
(N, 3072) uint8 in the same channel-first order and ``fine_labels``, N integers 0..99; the
20 coarse labels are not used), looked up like CIFAR-10 below.

Nothing is downloaded.  The folder is looked up in the data search bases of
:func:`crossbar_ep.io.data_dirs.search_bases` (``data.dir``, ``$CROSSBAR_EP_DATA``, the per-user
cache, ``/usr/share/datasets``), as ``<base>/cifar-10-batches-py``,
``<base>/cifar10/cifar-10-batches-py`` or ``<base>`` itself.  It must hold ``data_batch_1``
.. ``data_batch_5`` and ``test_batch``: pickled dicts with ``data`` (N, 3072) uint8 in
channel-first order (1024 red, 1024 green, 1024 blue, rows top to bottom) and ``labels``
(N integers 0..9).  The pickles are read by an unpickler that admits only the NumPy array
constructors, so a crafted file cannot run code.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from crossbar_ep.errors import DataError
from crossbar_ep.io.data_dirs import search_bases

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
FOLDER = "cifar-10-batches-py"
HOW_TO = ("download the python version of CIFAR-10 (cifar-10-python.tar.gz from "
          "https://www.cs.toronto.edu/~kriz/cifar.html), unpack it and set data.dir in the "
          "experiment file (or CROSSBAR_EP_DATA) to the folder holding cifar-10-batches-py/")
MAX_BATCH_BYTES = 256 << 20   # a CIFAR-10 batch file is about 31 MB

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


FOLDER_100, TRAIN_100, TEST_100 = "cifar-100-python", "train", "test"
HOW_TO_100 = ("download the python version of CIFAR-100 (cifar-100-python.tar.gz from "
              "https://www.cs.toronto.edu/~kriz/cifar.html), unpack it and set data.dir in "
              "the experiment file (or CROSSBAR_EP_DATA) to the folder holding "
              "cifar-100-python/")


def candidate_folders(config_dir: str | None, folder_name: str = FOLDER,
                      short: str = "cifar10") -> list[tuple[str, str]]:
    """(folder, origin) in lookup order."""
    out = []
    for origin, base in search_bases(config_dir):
        for folder in (os.path.join(base, folder_name), os.path.join(base, short, folder_name),
                       base):
            out.append((folder, origin))
    return out


def _read_batch(path: str, label_key: str = "labels", n_classes: int = 10,
                how_to: str = HOW_TO, what: str = "CIFAR-10") -> tuple[np.ndarray, np.ndarray]:
    """(data (N, 3072) uint8, labels (N,)) of one pickled batch; ``label_key`` names the
    labels (``labels`` in CIFAR-10, ``fine_labels`` in CIFAR-100)."""
    try:
        if os.path.getsize(path) > MAX_BATCH_BYTES:
            raise DataError(f"{path}: larger than {MAX_BATCH_BYTES >> 20} MiB; not a {what} "
                            f"batch file. Fix: {how_to}")
        with open(path, "rb") as fh:
            d = _SafeUnpickler(fh, encoding="bytes").load()
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001  (any unpickling failure: corrupt file)
        raise DataError(f"{path}: not a {what} python batch ({type(exc).__name__}: "
                        f"{str(exc)[:200]}); the file is corrupt: replace it. Fix: "
                        f"{how_to}") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict with data and labels; the file is "
                        f"corrupt. Fix: {how_to}")
    data = d.get(b"data", d.get("data"))
    labels = d.get(label_key.encode(), d.get(label_key))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or \
            data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {got}; the "
                        f"file is corrupt. Fix: {how_to}")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        y = None
    if y is None or y.shape[0] != data.shape[0]:
        raise DataError(f"{path}: '{label_key}' must list one integer per image "
                        f"({data.shape[0]}); the file is corrupt. Fix: {how_to}")
    if y.size and (y.min() < 0 or y.max() > n_classes - 1):
        raise DataError(f"{path}: labels outside 0..{n_classes - 1}; the file is corrupt. "
                        f"Fix: {how_to}")
    return data, y


def load_cifar10(config_dir: str | None = None) -> tuple[dict, str]:
    """(x_train (50000, 3072) uint8, y_train, x_test, y_test) as a dict, and the folder."""
    searched = []
    for folder, origin in candidate_folders(config_dir):
        searched.append(f"{folder} ({origin})")
        if all(os.path.isfile(os.path.join(folder, f)) for f in (*TRAIN_FILES, TEST_FILE)):
            parts = [_read_batch(os.path.join(folder, f)) for f in TRAIN_FILES]
            xt, yt = _read_batch(os.path.join(folder, TEST_FILE))
            return {"x_train": np.concatenate([p[0] for p in parts]),
                    "y_train": np.concatenate([p[1] for p in parts]),
                    "x_test": xt, "y_test": yt}, folder
    need = ", ".join((*TRAIN_FILES, TEST_FILE))
    raise DataError("cifar10 not found (no folder holds " + need + "). Searched:\n  " +
                    "\n  ".join(searched) + f"\nFix: {HOW_TO}.")


def load_cifar100(config_dir: str | None = None) -> tuple[dict, str]:
    """(x_train (50000, 3072) uint8, y_train (fine labels 0..99), x_test, y_test) as a dict,
    and the folder."""
    searched = []
    for folder, origin in candidate_folders(config_dir, FOLDER_100, "cifar100"):
        searched.append(f"{folder} ({origin})")
        if all(os.path.isfile(os.path.join(folder, f)) for f in (TRAIN_100, TEST_100)):
            xs, ys = _read_batch(os.path.join(folder, TRAIN_100), "fine_labels", 100,
                                 HOW_TO_100, "CIFAR-100")
            xt, yt = _read_batch(os.path.join(folder, TEST_100), "fine_labels", 100,
                                 HOW_TO_100, "CIFAR-100")
            return {"x_train": xs, "y_train": ys, "x_test": xt, "y_test": yt}, folder
    raise DataError("cifar100 not found (no folder holds train and test). Searched:\n  " +
                    "\n  ".join(searched) + f"\nFix: {HOW_TO_100}.")

"""What the trace writer and readers share: schema version, metric units, the side files of
epochs written while another process held the trace file, and the I/O errors and hints."""

from __future__ import annotations

import errno
import glob
import os
import re
import time
from contextlib import contextmanager

from crossbar_ep.crossbar.energy import ENERGY_METRICS
from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.io.files import UnsafeFileError, check_readable

try:
    import fcntl
except ImportError:        # not POSIX: no reader lock
    fcntl = None


SCHEMA_VERSION = 1


LOCK_WAIT_S = 5.0      # how long the writer retries a file another process holds (s)


PHASES = ("free", "nudged")


METRIC_UNITS = {
    "epoch": ("-", "epoch number (1-based)"),
    "train_loss": ("nats", "mean cross-entropy on the training set during the epoch"),
    "train_acc": ("fraction", "training accuracy during the epoch"),
    "test_loss": ("nats", "mean cross-entropy on the test set after the epoch"),
    "test_acc": ("fraction", "test accuracy after the epoch"),
    "val_acc": ("fraction", "validation accuracy after the epoch (NaN: no validation set)"),
    "epoch_time_s": ("s", "wall time of the epoch including evaluation"),
    "samples_per_s": ("samples/s", "training throughput"),
    "settle_residual": ("1/tau", "mean over batches of the last free-phase max |ds|"),
    "settle_steps": ("steps", "mean free-phase steps used"),
    "settle_time_free_s": ("s", "mean free-phase settling time: tau_s x integrated tau"),
    "settle_time_nudged_s": ("s", "mean nudged-phase settling time"),
    **{k: ("J", v) for k, v in ENERGY_METRICS.items()},
    "ir_drop_rel": ("fraction", "IR drop: ||W_read - W_programmed|| / ||W_programmed|| over "
                                "the forward reads of all arrays, at the end of the epoch"),
    "pulses_total": ("pulses", "programming pulses fired in the epoch, all arrays"),
    "at_bound_mean": ("fraction", "mean fraction of devices at a conductance bound"),
    "fast_pulses_total": ("pulses", "Tiki-Taka: pulses into the fast arrays in the epoch"),
    "transfer_reads_total": ("columns", "Tiki-Taka: fast-array columns read out in the epoch"),
    "transfer_pulses_total": ("pulses", "Tiki-Taka: transfer pulses into the slow arrays"),
    "calibration_reads_total": ("vectors", "drift compensation: calibration input vectors "
                                           "read in the epoch, all arrays"),
}


class TraceError(CrossbarEPError):
    """The trace file cannot be written or read."""


def busy(exc: Exception) -> bool:
    """True if HDF5 refused to open a file because another handle holds it."""
    text = str(exc)
    return (isinstance(exc, BlockingIOError) or getattr(exc, "errno", None) == errno.EAGAIN
            or "unable to lock file" in text or "already open" in text)


def io_hint(exc: Exception) -> str:
    """What to do about an OSError from a write in the run directory."""
    if busy(exc):
        return ("another process holds the file open (a reader such as HDFView, or an "
                "h5py.File left open in a notebook): close it")
    code = getattr(exc, "errno", None)
    return {errno.ENOSPC: "the disk is full: free space",
            errno.EDQUOT: "the disk quota is exceeded: free space",
            errno.EACCES: "permission denied: make the run directory writable",
            errno.EPERM: "permission denied: make the run directory writable",
            errno.EROFS: "the file system is read-only: move the run directory"}.get(
        code, "check the path, free space and permissions")


def io_error(path: str, exc: Exception, action: str) -> TraceError:
    hint = io_hint(exc)
    if action == "create":
        tail = "nothing was trained yet: fix this, or switch traces off (traces.enabled: false)"
    else:
        tail = (f"the checkpoint of the last completed epoch is kept: fix this and continue "
                f"with crossbar-ep run --resume {os.path.dirname(path) or '.'}")
    return TraceError(f"{path}: cannot {action} the trace file ({exc}); {hint}; {tail}")


def pending_paths(path: str) -> list:
    """Side files ``<stem>.pending-NNNN.h5`` of a trace file, by epoch."""
    stem = os.path.splitext(path)[0]
    found = glob.glob(glob.escape(stem) + ".pending-*.h5")
    return sorted((p for p in found if pending_epoch(p)), key=pending_epoch)


def pending_epoch(path: str) -> int:
    m = re.search(r"\.pending-(\d+)\.h5$", path)
    return int(m.group(1)) if m else 0


@contextmanager
def reading(path: str, wait_s: float = 2 * LOCK_WAIT_S):
    """An HDF5 file open for one read access, never blocking a writer between accesses.

    Holds a shared ``flock`` on the file while open, so an access waits for a running
    epoch write (HDF5's writer lock) to finish, and the writer waits for the access;
    HDF5's own lock is off (``locking=False``) so the file stays writable for the run.
    """
    import h5py
    try:
        check_readable(path, "trace file")
        fd = os.open(path, os.O_RDONLY)
    except UnsafeFileError as exc:
        raise TraceError(str(exc)) from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot open the trace file ({exc})") from None
    try:
        deadline = time.monotonic() + wait_s
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TraceError(f"{path}: another process holds the file for writing "
                                     f"(the run writes an epoch in one go); try again in a "
                                     f"moment") from None
                time.sleep(0.05)
            except OSError:     # file system without flock: read unlocked
                break
        try:
            try:
                f = h5py.File(path, "r", locking=False)
            except ValueError:      # HDF5 older than 1.10.7 / 1.12.1: no locking switch
                f = h5py.File(path, "r")
        except OSError as exc:
            raise TraceError(f"{path}: not a readable HDF5 trace file ({exc})") from None
        with f:
            try:
                yield f
            except OSError as exc:
                raise TraceError(f"{path}: read failed ({exc}); if another program writes "
                                 f"the file, try again once it has finished") from None
    finally:
        os.close(fd)      # releases the lock

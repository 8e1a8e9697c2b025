"""The trace file on disk: created, reopened on resume, appended to one epoch at a time.

Every epoch is first built as an HDF5 image in memory, then written by plain file I/O to a
side file ``<stem>.pending-NNNN.h5`` (temporary name, fsync, rename), then copied into the
trace file once the disk has room for it.  A full disk therefore fails in ordinary Python
I/O with a clear error, never inside HDF5 (whose failed writes leave the library in a state
that can crash the process).  When another program holds the trace file, or the disk is too
full for the copy, the side file stays and is merged at the next epoch, at the end of the
run or on ``--resume`` (``open_run`` reads side files meanwhile).

The file records whose it is: ``run_id`` and ``config_sha256`` attributes, checked on resume
against the run, so another run's trace file (or side file) placed in a run folder is refused
instead of merged.  Links and special files in place of the trace file are refused.
"""

from __future__ import annotations

import datetime
import errno
import os
import sys
import time

from crossbar_ep import __version__
from crossbar_ep.io.files import UnsafeFileError, atomic_write, check_plain
from crossbar_ep.io.trace_files import (
    LOCK_WAIT_S,
    SCHEMA_VERSION,
    TraceError,
    busy,
    io_error,
    io_hint,
    pending_epoch,
    pending_paths,
)

MERGE_MARGIN_BYTES = 4 << 20      # free space kept beyond twice an epoch's image


def memory_file(name: str):
    """A new HDF5 file that lives in memory only (its image: :func:`image_of`)."""
    import h5py
    return h5py.File(f"{name}-{id(object())}", "w", driver="core", backing_store=False)


def image_of(f) -> bytes:
    f.flush()
    return f.id.get_file_image()


class TraceStore:
    """The trace file ``path`` of one run.

    ``copy_metrics(f, row)`` writes a metrics row into an open file; ``identity``:
    ``{"run_id", "config_sha256"}`` of the run writing it (None: a file made by the Python
    API's callback, which marks it ``written_by: python-api``)."""

    def __init__(self, path: str, copy_metrics, identity: dict | None = None):
        self.path = path
        self.copy_metrics = copy_metrics     # (open file, metrics row) -> None
        self.identity = identity or {}

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path) or "."

    def _hint(self) -> str:
        return f"crossbar-ep run --resume {self.folder} --new-traces"

    def _check_files(self) -> None:
        try:
            check_plain(self.path, "trace file")
            for side in pending_paths(self.path):
                check_plain(side, "trace side file")
        except UnsafeFileError as exc:
            raise TraceError(str(exc)) from None

    def stamp(self, f, cfg_yaml: str | None) -> None:
        """The file-level attributes of a new trace (or side) file."""
        f.attrs["crossbar_ep_version"] = __version__
        f.attrs["schema_version"] = SCHEMA_VERSION
        if cfg_yaml is not None:
            f.attrs["config_yaml"] = cfg_yaml
        for k, v in self.identity.items():
            f.attrs[k] = v
        if not self.identity:
            f.attrs["written_by"] = "python-api"
        f.attrs["created_utc"] = datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds")
        f.require_group("epochs")
        f.require_group("metrics")

    # ------------------------------------------------------------------ open
    def create(self, cfg_yaml: str) -> None:
        """A new, empty trace file (side files of an earlier, unfinished run are removed)."""
        self._check_files()
        try:
            for side in pending_paths(self.path):
                os.remove(side)
            with memory_file("new") as f:
                self.stamp(f, cfg_yaml)
                img = image_of(f)
            atomic_write(self.path, lambda fh: fh.write(img))
        except OSError as exc:
            raise io_error(self.path, exc, "create") from None

    def replace(self, cfg_yaml: str) -> str | None:
        """``--new-traces``: keep the current file as ``<stem>.replaced-N.h5`` (with its side
        files) and start a new one; returns the kept file's name."""
        self._check_files()
        kept = None
        if os.path.lexists(self.path):
            stem, n = os.path.splitext(self.path)[0], 1
            while os.path.lexists(f"{stem}.replaced-{n}.h5"):
                n += 1
            kept = f"{stem}.replaced-{n}.h5"
            os.replace(self.path, kept)
        for side in pending_paths(self.path):
            os.replace(side, f"{os.path.splitext(kept or side)[0]}.epoch-"
                             f"{pending_epoch(side):04d}.h5")
        self.create(cfg_yaml)
        return kept

    def owner_problem(self, attrs, same_config) -> str | None:
        """Why the file with attributes ``attrs`` is not this run's (None if it is)."""
        mine = self.identity.get("run_id")
        theirs = attrs.get("run_id")
        if isinstance(theirs, bytes):
            theirs = theirs.decode("utf-8", "replace")
        if theirs is not None:
            if str(theirs) != mine:
                return f"it belongs to another run (run id {str(theirs)[:12]}" + \
                    (f", this run: {mine[:12]})" if mine else ")")
            return None
        api = attrs.get("written_by") == "python-api"
        if mine is None or api:
            return None if mine is None else ("it was written by the Python API "
                                              "(crossbar_ep.api.Traces), not by this run")
        text = attrs.get("config_yaml")
        if same_config is not None and text is not None and not same_config(str(text)):
            return "it records another config than this run's"
        return None

    def reopen(self, cfg_yaml: str, resume_epochs: int, same_config=None) -> None:
        """On resume: check the file is this run's, drop epochs the checkpoint does not
        hold, merge side files up to it, and record the run's identity."""
        self._check_files()
        if not os.path.exists(self.path):
            if resume_epochs:
                raise TraceError(f"{self.path}: the trace file is missing but the run has "
                                 f"{resume_epochs} epochs; put it back, or start a new trace "
                                 f"file that holds the epochs from {resume_epochs + 1} on: "
                                 f"{self._hint()}")
            self.create(cfg_yaml)
            return
        try:
            f = self.open_append()
            if f is None:
                raise BlockingIOError(errno.EAGAIN, "the file is locked")
            with f:
                problem = self.owner_problem(f.attrs, same_config)
                if problem is None:
                    f.attrs["config_yaml"] = cfg_yaml
                    for k, v in self.identity.items():
                        f.attrs[k] = v
                    for name in list(f["epochs"]):
                        if int(name) > resume_epochs:   # written after the last checkpoint
                            del f["epochs"][name]
                    for ds in f["metrics"].values():
                        if ds.shape[0] > resume_epochs:
                            ds.resize((resume_epochs,))
                    done = self.merge_pending(f, resume_epochs)
        except (OSError, KeyError, ValueError) as exc:
            hint = f"{io_hint(exc)} and resume again; or " if busy(exc) else ""
            raise TraceError(f"{self.path}: cannot reopen the trace file to resume ({exc}); "
                             f"{hint}keep it aside and start a new trace file from here: "
                             f"{self._hint()}") from None
        if problem is not None:
            raise TraceError(f"{self.path}: not this run's trace file: {problem}; nothing was "
                             f"merged or changed.  Keep it aside and start a new trace file "
                             f"for this run (the file is renamed, not deleted): {self._hint()}")
        for side in done:
            os.remove(side)

    def open_append(self):
        """The trace file open for appending, or None if another process still holds it
        after ``LOCK_WAIT_S`` of retries."""
        import h5py

        from crossbar_ep.io import traces      # its LOCK_WAIT_S may be changed at run time
        wait = getattr(traces, "LOCK_WAIT_S", LOCK_WAIT_S)
        deadline = time.monotonic() + wait
        while True:
            try:
                return h5py.File(self.path, "a")
            except OSError as exc:
                if not busy(exc):
                    raise
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.02)

    # ------------------------------------------------------------------ append
    def merge_pending(self, f, upto: int | None = None) -> list:
        """Copy side files' epochs (up to ``upto``) into the open trace file ``f``; returns
        the side files to delete once ``f`` is closed (merged, or beyond ``upto``)."""
        import h5py
        done = []
        for side in pending_paths(self.path):
            epoch = pending_epoch(side)
            if upto is None or epoch <= upto:
                key = f"{epoch:04d}"
                with h5py.File(side, "r") as src:
                    problem = self.owner_problem(src.attrs, None)
                    if problem is not None:
                        raise TraceError(f"{side}: not this run's side file: {problem}; "
                                         f"remove it, or start a new trace file: "
                                         f"{self._hint()}")
                    if key in f["epochs"]:
                        del f["epochs"][key]
                    f.copy(src[f"epochs/{key}"], f["epochs"], name=key)
                    row = {k: float(ds[epoch - 1]) for k, ds in src["metrics"].items()}
                self.copy_metrics(f, {**row, "epoch": epoch})
            done.append(side)
        return done

    def append(self, epoch: int, image: bytes) -> None:
        """Write one epoch's in-memory image: side file first, then into the trace file."""
        side = f"{os.path.splitext(self.path)[0]}.pending-{epoch:04d}.h5"
        self._check_files()
        try:
            atomic_write(side, lambda fh: fh.write(image))
        except OSError as exc:
            raise io_error(side, exc, "write") from None
        try:            # the file system's own count (not an estimate of the run's)
            st = os.statvfs(self.folder)
            free = st.f_bavail * st.f_frsize
        except (OSError, AttributeError):
            free = None
        need = 2 * len(image) + MERGE_MARGIN_BYTES
        if free is not None and free < need:
            mib = 1 << 20
            raise TraceError(f"{self.path}: the disk is nearly full ({free / mib:.1f} MiB free, "
                             f"copying epoch {epoch} in needs about {need / mib:.1f} MiB); the "
                             f"epoch is kept in {os.path.basename(side)}, the checkpoint of the "
                             f"last completed epoch is kept: free space and continue with "
                             f"crossbar-ep run --resume {self.folder}")
        try:
            f = self.open_append()
            if f is None:   # a reader without our lock (HDFView, h5py.File) holds it
                print(f"warning: {self.path}: another process holds the file open; epoch "
                      f"{epoch} went to {os.path.basename(side)}, merged when the file is "
                      f"free", file=sys.stderr)
                return
            with f:
                done = self.merge_pending(f)
                f.flush()
            for s in done:
                os.remove(s)
        except OSError as exc:
            raise io_error(self.path, exc, "write") from None

    def finish(self) -> None:
        """Merge side files left by a busy trace file (end of a run); says so if it can't."""
        sides = pending_paths(self.path)
        if not sides:
            return
        try:
            f = self.open_append()
            if f is not None:
                with f:
                    done = self.merge_pending(f)
                for side in done:
                    os.remove(side)
                return
        except OSError as exc:
            raise io_error(self.path, exc, "write") from None
        print(f"warning: {self.path}: another process still holds the file; epochs "
              f"{[pending_epoch(p) for p in sides]} stay in {os.path.basename(sides[0])} "
              f"and the like (open_run reads them too); close the other program and run "
              f"crossbar-ep run --resume {self.folder} to merge them", file=sys.stderr)

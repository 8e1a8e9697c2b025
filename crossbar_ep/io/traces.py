"""HDF5 traces of a run for circuit designers: what the network and the arrays did.

One file per run (``traces.file`` in the run directory), schema in ``docs/hdf5_schema.md``.
What an epoch records is gathered in memory while it runs and written when it ends, in one
open-write-flush-close of the file: a run killed mid-epoch leaves the file closed and holding
every completed epoch; ``--resume`` drops any epoch the checkpoint does not hold and appends.

Read a file with :func:`open_run` (no knowledge of the layout needed) or ``crossbar-ep inspect``.
Readers and the writer coexist: a reader opens the file only for each access, under a shared
lock that waits for an epoch's write to finish; the writer retries a busy file for
``LOCK_WAIT_S`` and, if another program still holds it, writes that epoch to a side file
``<stem>.pending-NNNN.h5`` that is merged at the next successful open (and read by
:func:`open_run` meanwhile).
"""

from __future__ import annotations

import datetime
import errno
import glob
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from crossbar_ep import __version__
from crossbar_ep.crossbar.energy import ENERGY_METRICS
from crossbar_ep.errors import CrossbarEPError

SCHEMA_VERSION = 1
LOCK_WAIT_S = 5.0      # how long the writer retries a file another process holds (s)

PHASES = ("free", "nudged")

# units and descriptions of the per-epoch metrics (others are stored with unit "-")
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
}


class TraceError(CrossbarEPError):
    """The trace file cannot be written or read."""


def _busy(exc: Exception) -> bool:
    """True if HDF5 refused to open a file because another handle holds it."""
    text = str(exc)
    return (isinstance(exc, BlockingIOError) or getattr(exc, "errno", None) == errno.EAGAIN
            or "unable to lock file" in text or "already open" in text)


def io_hint(exc: Exception) -> str:
    """What to do about an OSError from a write in the run directory."""
    if _busy(exc):
        return ("another process holds the file open (a reader such as HDFView, or an "
                "h5py.File left open in a notebook): close it")
    code = getattr(exc, "errno", None)
    return {errno.ENOSPC: "the disk is full: free space",
            errno.EDQUOT: "the disk quota is exceeded: free space",
            errno.EACCES: "permission denied: make the run directory writable",
            errno.EPERM: "permission denied: make the run directory writable",
            errno.EROFS: "the file system is read-only: move the run directory"}.get(
        code, "check the path, free space and permissions")


def _io_error(path: str, exc: Exception, action: str) -> TraceError:
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
    return sorted((p for p in found if _pending_epoch(p)), key=_pending_epoch)


def _pending_epoch(path: str) -> int:
    m = re.search(r"\.pending-(\d+)\.h5$", path)
    return int(m.group(1)) if m else 0


try:
    import fcntl
except ImportError:        # not POSIX: no reader lock
    fcntl = None


@contextmanager
def _reading(path: str, wait_s: float = 2 * LOCK_WAIT_S):
    """An HDF5 file open for one read access, never blocking a writer between accesses.

    Holds a shared ``flock`` on the file while open, so an access waits for a running
    epoch write (HDF5's writer lock) to finish, and the writer waits for the access;
    HDF5's own lock is off (``locking=False``) so the file stays writable for the run.
    """
    import h5py
    try:
        fd = os.open(path, os.O_RDONLY)
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


# ---------------------------------------------------------------------- recording
@dataclass
class _TileProbe:
    """Records one tile's reads during a recorded batch (filled by CrossbarMatrix)."""

    samples: int
    current_factor: float     # amperes per output unit (differential column current)
    phase: list = field(default_factory=lambda: [0])
    reads: dict = field(default_factory=lambda: {"forward": [], "transposed": []})

    def record(self, transposed: bool, current_A: np.ndarray, codes) -> None:
        self.reads["transposed" if transposed else "forward"].append(
            (self.phase[0], current_A.astype(np.float32), None if codes is None
             else codes.astype(np.int16)))


class Recorder:
    """Gathers one epoch's traces at the configured cadence and appends them to the file.

    Hooks: the training loop calls :meth:`begin_epoch`, :meth:`begin_batch` /
    :meth:`end_batch` around every batch and :meth:`end_epoch` with the metrics row; the
    settler calls :meth:`phase` and :meth:`step` (trajectories), crossbar tiles call their
    probes (currents, ADC codes), and the pulse updater reports counts per device.
    """

    def __init__(self, tcfg, run_dir: str, cfg_yaml: str, learner, resume_epochs: int | None,
                 tau_s: float = 1e-7):
        self.t = tcfg
        self.tau_s = tau_s
        self.path = os.path.join(run_dir, tcfg.file)
        self.learner = learner
        self.settler = getattr(learner, "settler", None)
        self.pulses = getattr(learner, "pulses", None)
        self.crossbars = self.pulses.crossbars if self.pulses is not None else {}
        self._epoch = None
        self._batch = None
        self._open_file(cfg_yaml, resume_epochs)

    # -------------------------------------------------------------- file
    def _h5(self, mode: str, action: str = "write"):
        import h5py
        try:
            return h5py.File(self.path, mode)
        except OSError as exc:
            raise _io_error(self.path, exc, action) from None

    def _open_append(self):
        """The trace file open for appending, or None if another process still holds it
        after ``LOCK_WAIT_S`` of retries."""
        import h5py
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                return h5py.File(self.path, "a")
            except OSError as exc:
                if not _busy(exc):
                    raise
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.02)

    def _init_file(self, f, cfg_yaml: str | None) -> None:
        f.attrs["crossbar_ep_version"] = __version__
        f.attrs["schema_version"] = SCHEMA_VERSION
        if cfg_yaml is not None:
            f.attrs["config_yaml"] = cfg_yaml
        f.attrs["created_utc"] = datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds")
        f.create_group("epochs")
        f.create_group("metrics")

    def _open_file(self, cfg_yaml: str, resume_epochs: int | None) -> None:
        if resume_epochs is None or not os.path.exists(self.path):
            if resume_epochs:
                raise TraceError(f"{self.path}: the trace file is missing but the run has "
                                 f"{resume_epochs} epochs: restore it, or switch traces off "
                                 f"(--set traces.enabled=false) to resume without traces")
            try:
                for side in pending_paths(self.path):   # left by an earlier, unfinished run
                    os.remove(side)
                with self._h5("w", "create") as f:
                    self._init_file(f, cfg_yaml)
            except OSError as exc:
                raise _io_error(self.path, exc, "create") from None
            return
        try:
            f = self._open_append()
            if f is None:
                raise BlockingIOError(errno.EAGAIN, "the file is locked")
            with f:
                f.attrs["config_yaml"] = cfg_yaml
                for name in list(f["epochs"]):
                    if int(name) > resume_epochs:   # written after the last checkpoint
                        del f["epochs"][name]
                for ds in f["metrics"].values():
                    if ds.shape[0] > resume_epochs:
                        ds.resize((resume_epochs,))
                done = self._merge_pending(f, resume_epochs)
            for side in done:
                os.remove(side)
        except (OSError, KeyError) as exc:
            hint = f"{io_hint(exc)}; or " if _busy(exc) else ""
            raise TraceError(f"{self.path}: cannot reopen the trace file to resume ({exc}); "
                             f"{hint}move it aside to start a new one, or resume with "
                             f"--set traces.enabled=false") from None

    def _merge_pending(self, f, upto: int | None = None) -> list:
        """Copy side files' epochs (up to ``upto``) into the open trace file ``f``; returns
        the side files to delete once ``f`` is closed (merged, or beyond ``upto``)."""
        import h5py
        done = []
        for side in pending_paths(self.path):
            epoch = _pending_epoch(side)
            if upto is None or epoch <= upto:
                key = f"{epoch:04d}"
                with h5py.File(side, "r") as src:
                    if key in f["epochs"]:
                        del f["epochs"][key]
                    f.copy(src[f"epochs/{key}"], f["epochs"], name=key)
                    row = {k: float(ds[epoch - 1]) for k, ds in src["metrics"].items()}
                self._write_metrics(f, {**row, "epoch": epoch})
            done.append(side)
        return done

    def finish(self) -> None:
        """Merge side files left by a busy trace file (end of a run); says so if it can't."""
        sides = pending_paths(self.path)
        if not sides:
            return
        try:
            f = self._open_append()
            if f is not None:
                with f:
                    done = self._merge_pending(f)
                for side in done:
                    os.remove(side)
                return
        except OSError as exc:
            raise _io_error(self.path, exc, "write") from None
        print(f"warning: {self.path}: another process still holds the file; epochs "
              f"{[_pending_epoch(p) for p in sides]} stay in {os.path.basename(sides[0])} "
              f"and the like (open_run reads them too); close the other program and run "
              f"crossbar-ep run --resume {os.path.dirname(self.path) or '.'} to merge them",
              file=sys.stderr)

    # -------------------------------------------------------------- cadence
    def records_epoch(self, epoch: int) -> bool:
        return epoch == 1 or epoch % self.t.every_epochs == 0

    def begin_epoch(self, epoch: int, n_batches: int) -> None:
        self._epoch = {"epoch": epoch, "batches": {}, "n_batches": n_batches,
                       "settle": {k: np.zeros(n_batches, np.int32 if "steps" in k else
                                              np.float32)
                                  for k in ("free_residual", "free_steps", "nudged_residual",
                                            "nudged_steps", "free_time_s", "nudged_time_s")}}
        if self.pulses is not None and self.t.pulses and self.records_epoch(epoch):
            self.pulses.track_devices(True)

    def begin_batch(self, index: int) -> None:
        e = self._epoch
        detailed = (self.records_epoch(e["epoch"]) and
                    any(b == index or (b < 0 and index == e["n_batches"] + b)
                        for b in self.t.batches))
        self._batch, self._batch_index = None, index
        if not detailed:
            return
        rec = {"index": index, "traj": {p: [] for p in PHASES}, "tiles": {}, "pulses": {}}
        self._batch = rec
        if self.t.trajectories and self.settler is not None:
            self.settler.observers.append(self)
        for spec in self.t.tiles:
            name, ri, ci = parse_tile(spec)
            cb = self.crossbars.get(name)
            if cb is None:
                continue
            probe = _TileProbe(self.t.samples, cb.current_factor())
            rec["tiles"][(name, ri, ci)] = probe
            cb.watch_tile((ri, ci), probe)
        self._phase = 0

    def on_phase(self, nudged: bool, S: list) -> None:
        """Settler hook at the start of a phase (S: states, index 1..L)."""
        if self._batch is None:
            return
        self._phase = int(nudged)
        for probe in self._batch["tiles"].values():
            probe.phase[0] = self._phase
        self._batch["traj"][PHASES[self._phase]].append(self._snap(S))

    def on_step(self, S: list) -> None:
        """Settler hook after every step: a copy of the recorded samples' states."""
        if self._batch is not None:
            self._batch["traj"][PHASES[self._phase]].append(self._snap(S))

    def _snap(self, S) -> list:
        n = self.t.samples
        return [np.array(S[k][:n], np.float32) for k in sorted(S)]

    def end_batch(self, stats) -> None:
        """After a batch: its settle statistics; closes the batch's detailed record."""
        e, rec, idx = self._epoch, self._batch, self._batch_index
        s = e["settle"]
        s["free_residual"][idx] = stats.residual
        s["free_steps"][idx] = stats.steps
        s["nudged_residual"][idx] = getattr(stats, "nudged_residual", 0.0)
        s["nudged_steps"][idx] = getattr(stats, "nudged_steps", 0)
        s["free_time_s"][idx] = getattr(stats, "free_time_tau", 0.0) * self.tau_s
        s["nudged_time_s"][idx] = getattr(stats, "nudged_time_tau", 0.0) * self.tau_s
        if rec is None:
            return
        if self.settler is not None:
            if self in self.settler.observers:
                self.settler.observers.remove(self)
        for (name, ri, ci), _probe in rec["tiles"].items():
            self.crossbars[name].unwatch_tile((ri, ci))
        if self.pulses is not None and self.t.pulses:
            rec["pulses"] = {k: v.astype(np.int16) for k, v in self.pulses.last_counts.items()}
        e["batches"][rec["index"]] = rec
        self._batch = None

    def pending_bytes(self) -> int:
        """Estimate (uncompressed, generous) of the bytes :meth:`end_epoch` will write."""
        e = self._epoch
        n = 64 * 1024 + sum(a.nbytes for a in e["settle"].values())
        if not self.records_epoch(e["epoch"]):
            return n
        for rec in e["batches"].values():
            n += 4096 * (len(rec["traj"]) + len(rec["tiles"]) + len(rec["pulses"]))
            n += sum(a.nbytes for snaps in rec["traj"].values() for s in snaps for a in s)
            n += sum(r[1].nbytes + (0 if r[2] is None else r[2].nbytes)
                     for probe in rec["tiles"].values() for reads in probe.reads.values()
                     for r in reads)
            n += sum(a.nbytes for a in rec["pulses"].values())
        net = getattr(self.learner, "net", None)
        if net is not None:    # G+, G- or weights (f4) and per-device pulse totals (i4)
            n += 12 * sum(W.size for W in net.W.values())
        return n

    def end_epoch(self, row: dict) -> None:
        """Append the epoch's records and metrics row to the file (one open-flush-close);
        if another process holds the file, to a side file merged at the next open."""
        import h5py
        e = self._epoch
        epoch = e["epoch"]
        totals = {}
        if self.pulses is not None and self.t.pulses and self.records_epoch(epoch):
            totals = self.pulses.take_device_totals()
            self.pulses.track_devices(False)
        path = self.path
        try:
            f = self._open_append()
            if f is None:   # a reader without our lock (HDFView, h5py.File) holds it
                path = f"{os.path.splitext(self.path)[0]}.pending-{epoch:04d}.h5"
                with h5py.File(path, "w") as side:
                    self._init_file(side, None)
                    side.attrs["pending_for"] = os.path.basename(self.path)
                    self._write_epoch(side, row, totals)
                print(f"warning: {self.path}: another process holds the file open; epoch "
                      f"{epoch} went to {os.path.basename(path)}, merged when the file is "
                      f"free", file=sys.stderr)
            else:
                with f:
                    done = self._merge_pending(f)
                    self._write_epoch(f, row, totals)
                    f.flush()
                for side in done:
                    os.remove(side)
        except OSError as exc:
            raise _io_error(path, exc, "write") from None
        self._epoch = None

    def _write_epoch(self, f, row: dict, totals: dict) -> None:
        e = self._epoch
        epoch = e["epoch"]
        self._write_metrics(f, row)
        g = f["epochs"].require_group(f"{epoch:04d}")
        g.attrs["epoch"] = epoch
        if self.t.settle:
            self._write_settle(g, e["settle"])
        if self.records_epoch(epoch):
            if self.t.conductances:
                self._write_conductances(g)
            for name, tot in totals.items():
                self._ds(g, f"pulses/{name}/per_device_total", tot, "pulses",
                         "pulses fired on each device during the epoch (G+ of a pair; "
                         "G- received as many of the opposite polarity)",
                         "(n_out, n_in): output (column) x input (row)")
            for idx, rec in sorted(e["batches"].items()):
                self._write_batch(g.require_group(f"batches/{idx:05d}"), rec)

    # -------------------------------------------------------------- writers
    def _ds(self, g, path: str, data, units: str, description: str, dims: str):
        data = np.asarray(data)
        kw = {}
        if data.size >= 64 and self.t.compression:
            kw = {"compression": "gzip", "compression_opts": self.t.compression,
                  "shuffle": True, "chunks": True}
        ds = g.create_dataset(path, data=data, **kw)
        ds.attrs["units"] = units
        ds.attrs["description"] = description
        ds.attrs["dims"] = dims
        return ds

    def _write_metrics(self, f, row: dict) -> None:
        m = f["metrics"]
        for key, value in row.items():
            if isinstance(value, dict) or isinstance(value, str):
                continue
            v = np.nan if value is None else float(value)
            if key not in m:
                n0 = row["epoch"] - 1
                ds = m.create_dataset(key, shape=(n0,), maxshape=(None,), dtype="f8",
                                      chunks=(256,), fillvalue=np.nan)
                unit, desc = METRIC_UNITS.get(key, ("-", key))
                ds.attrs["units"], ds.attrs["description"] = unit, desc
                ds.attrs["dims"] = "(epochs,): index e holds epoch e + 1"
            ds = m[key]
            n = row["epoch"]
            if ds.shape[0] < n:
                ds.resize((n,))
            ds[n - 1] = v

    def _write_settle(self, g, s: dict) -> None:
        desc = {"free_residual": ("1/tau", "max |ds| per tau at the last free-phase step"),
                "free_steps": ("steps", "free-phase steps used"),
                "nudged_residual": ("1/tau", "max |ds| per tau at the last nudged-phase step"),
                "nudged_steps": ("steps", "nudged-phase steps used"),
                "free_time_s": ("s", "free-phase settling time: integrated tau x tau_s"),
                "nudged_time_s": ("s", "nudged-phase settling time")}
        for k, v in s.items():
            self._ds(g, f"settle/{k}", v, desc[k][0], desc[k][1], "(batches,): per batch")

    def _write_conductances(self, g) -> None:
        if self.crossbars:
            for name, cb in self.crossbars.items():
                for side, dev in (("G_pos", cb.pos), ("G_neg", cb.neg)):
                    if dev is None:
                        continue
                    self._ds(g, f"conductance/{name}/{side}",
                             dev.conductance().astype(np.float32), "S",
                             f"conductance of the {'G+' if side == 'G_pos' else 'G-'} device "
                             f"of each pair" if cb.neg is not None else
                             "conductance of each device (reference column at mid range)",
                             "(n_out, n_in): output (column) x input (row)")
                a = g[f"conductance/{name}"].attrs
                a["weight_scale"] = cb.scale
                a["g_min_S"], a["g_max_S"] = cb.card.g_min_S, cb.card.g_max_S
                a["mapping"] = cb.signed
                a["weights"] = ("W = weight_scale * (G_pos - G_neg) / (g_max_S - g_min_S)"
                                if cb.neg is not None else
                                "W = weight_scale * (2 (G_pos - g_min_S) / (g_max_S - g_min_S) "
                                "- 1)")
        net = getattr(self.learner, "net", None)
        if net is not None:   # digital matrices (crossbar ones follow from G)
            for name, W in net.W.items():
                if name in self.crossbars:
                    continue
                self._ds(g, f"weights/{name}", W.astype(np.float32), "-",
                         "weight matrix (digital)", "(n_out, n_in)")

    def _write_batch(self, g, rec: dict) -> None:
        g.attrs["batch"] = rec["index"]
        for phase, snaps in rec["traj"].items():
            if not snaps:
                continue
            for k in range(len(snaps[0])):
                arr = np.stack([s[k] for s in snaps])
                self._ds(g, f"trajectories/{phase}/s{k + 1}", arr, "state units (tanh output)",
                         f"layer {k + 1} neuron states of the first recorded samples, "
                         f"{phase} phase: index 0 is the starting state, then one per step",
                         "(steps + 1, samples, neurons)")
        for (name, ri, ci), probe in rec["tiles"].items():
            for direction, reads in probe.reads.items():
                if not reads:
                    continue
                base = f"tiles/{name}_r{ri}_c{ci}/{direction}"
                self._ds(g, f"{base}/phase", np.array([r[0] for r in reads], np.uint8), "-",
                         "phase of each read: 0 free, 1 nudged", "(reads,)")
                self._ds(g, f"{base}/current_A", np.stack([r[1] for r in reads]), "A",
                         "differential sensed current per line (I+ - I-, or I - I_ref), "
                         "noise-free, from the DAC voltages", "(reads, samples, sensed lines)")
                if reads[0][2] is not None:
                    self._ds(g, f"{base}/adc_code", np.stack([r[2] for r in reads]), "LSB",
                             "signed ADC output code (read noise included)",
                             "(reads, samples, sensed lines)")
        for name, n in rec["pulses"].items():
            self._ds(g, f"pulses/{name}", n, "pulses",
                     "signed pulse count of this batch's update per device (+ SET on G+, "
                     "RESET on G-; - the opposite)", "(n_out, n_in)")


def parse_tile(spec: str) -> tuple[str, int, int]:
    """'W1:0:1' -> ('W1', 0, 1): matrix, row-tile index, column-tile index."""
    parts = spec.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"{spec!r}: expected MATRIX:ROW_TILE:COL_TILE, e.g. W1:0:0")
    return parts[0], int(parts[1]), int(parts[2])


# ---------------------------------------------------------------------- reading
class TraceRun:
    """Read access to a trace file without knowing its layout (NumPy arrays, metadata).

    The file is opened only during each access (see :func:`_reading`), so holding a
    ``TraceRun`` never stops a run from writing; epochs still in side files
    (``<stem>.pending-NNNN.h5``) are read as well.

    >>> r = open_run("runs/x/traces.h5")
    >>> r.metrics["test_acc"], r.epochs, r.conductance(r.epochs[-1], "W1")["G_pos"]
    """

    def __init__(self, path: str):
        self.path = path
        with _reading(path) as f:
            if "epochs" not in f:
                raise TraceError(f"{path}: HDF5 file without an 'epochs' group: not a "
                                 f"crossbar-ep trace file")

    def close(self) -> None:
        """Nothing stays open between accesses (kept for ``with`` and old code)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _attr(self, name: str, default=None):
        with _reading(self.path) as f:
            return f.attrs.get(name, default)

    # metadata
    @property
    def version(self) -> str:
        return str(self._attr("crossbar_ep_version", ""))

    @property
    def schema_version(self) -> int:
        return int(self._attr("schema_version", 0))

    @property
    def config(self) -> dict:
        """The run's resolved config as a plain dict."""
        import yaml
        return yaml.safe_load(str(self._attr("config_yaml")))

    def _sources(self) -> list:
        return [self.path] + pending_paths(self.path)

    @property
    def epochs(self) -> list:
        """Epoch numbers with a group in the file (or a side file), ascending."""
        found = set()
        for path in self._sources():
            with _reading(path) as f:
                found.update(int(k) for k in f["epochs"])
        return sorted(found)

    @property
    def metrics(self) -> dict:
        """Per-epoch metrics: name -> float array (index e holds epoch e + 1)."""
        with _reading(self.path) as f:
            out = {k: ds[()] for k, ds in f["metrics"].items()}
        for path in pending_paths(self.path):
            e = _pending_epoch(path)
            with _reading(path) as f:
                for k, ds in f["metrics"].items():
                    a = out.get(k, np.zeros(0))
                    if a.shape[0] < e:
                        a = np.concatenate([a, np.full(e - a.shape[0], np.nan)])
                    a[e - 1] = ds[e - 1]
                    out[k] = a
        return out

    @contextmanager
    def _epoch(self, epoch: int):
        key = f"epochs/{epoch:04d}"
        for path in self._sources():
            with _reading(path) as f:
                if key in f:
                    yield f[key]
                    return
        raise KeyError(f"{self.path}: no epoch {epoch} (has {self.epochs})")

    def _read(self, epoch: int, sub: str) -> dict:
        with self._epoch(epoch) as g:
            g = g.get(sub)
            return {k: v[()] for k, v in g.items()} if g is not None else {}

    def _names(self, epoch: int, sub: str) -> list:
        with self._epoch(epoch) as g:
            g = g.get(sub)
            return sorted(g) if g is not None else []

    def settle(self, epoch: int) -> dict:
        """Per-batch settle statistics of an epoch: name -> array (batches,)."""
        return self._read(epoch, "settle")

    def conductance(self, epoch: int, matrix: str) -> dict:
        """{'G_pos': (n_out, n_in) S, 'G_neg': ...} of one array at the end of an epoch."""
        return self._read(epoch, f"conductance/{matrix}")

    def weights(self, epoch: int) -> dict:
        """Effective weight matrices at the end of an epoch: name -> (n_out, n_in)."""
        return self._read(epoch, "weights")

    def matrices(self, epoch: int) -> list:
        return self._names(epoch, "conductance")

    def pulse_totals(self, epoch: int) -> dict:
        """Pulses per device summed over an epoch: matrix -> (n_out, n_in) int."""
        with self._epoch(epoch) as g:
            g = g.get("pulses")
            return ({k: v["per_device_total"][()] for k, v in g.items()} if g is not None
                    else {})

    def batches(self, epoch: int) -> list:
        return [int(k) for k in self._names(epoch, "batches")]

    def _batch(self, epoch: int, batch: int, sub: str) -> dict:
        have = self.batches(epoch)
        if batch not in have:
            raise KeyError(f"{self.path}: epoch {epoch} has no recorded batch {batch} "
                           f"(has {have})")
        return self._read(epoch, f"batches/{batch:05d}/{sub}") if sub else {}

    def trajectories(self, epoch: int, batch: int, phase: str = "free") -> dict:
        """Layer k -> states (steps + 1, samples, n_k) of a recorded batch and phase."""
        return {int(k[1:]): v for k, v in
                self._batch(epoch, batch, f"trajectories/{phase}").items()}

    def batch_pulses(self, epoch: int, batch: int) -> dict:
        """Signed pulse counts per device of a recorded batch's update: matrix -> array."""
        return self._batch(epoch, batch, "pulses")

    def tiles(self, epoch: int, batch: int) -> list:
        self._batch(epoch, batch, "")
        return self._names(epoch, f"batches/{batch:05d}/tiles")

    def tile_reads(self, epoch: int, batch: int, tile: str, direction: str = "forward") -> dict:
        """{'phase', 'current_A', 'adc_code'} of one recorded tile ('W1_r0_c0')."""
        return self._batch(epoch, batch, f"tiles/{tile}/{direction}")


def open_run(path: str) -> TraceRun:
    """Open a trace file (or a run directory holding ``traces.h5``) for reading."""
    if os.path.isdir(path):
        from crossbar_ep.config.experiment import config_from_dict, read_yaml
        name = "traces.h5"
        cfg_path = os.path.join(path, "config.yaml")
        if os.path.isfile(cfg_path):
            name = config_from_dict(read_yaml(cfg_path), cfg_path).traces.file
        path = os.path.join(path, name)
    if not os.path.exists(path):
        raise TraceError(f"{path}: no trace file; enable traces in the experiment "
                         f"(traces: {{enabled: true}}) and run it")
    return TraceRun(path)


def describe_tree(path: str) -> str:
    """Text tree of a trace file: groups, datasets with shape, dtype and units."""
    import h5py
    lines = []
    with _reading(path) as f:
        lines.append(f"{path}")
        for k, v in f.attrs.items():
            text = str(v)
            if "\n" in text:
                text = f"<{text.count(chr(10))} lines of YAML>"
            lines.append(f"  @{k} = {text}")

        def walk(g, depth):
            for name, obj in g.items():
                pad = "  " * depth
                if isinstance(obj, h5py.Dataset):
                    units = obj.attrs.get("units", "")
                    lines.append(f"{pad}{name}  {obj.shape} {obj.dtype}"
                                 + (f"  [{units}]" if units else ""))
                else:
                    lines.append(f"{pad}{name}/")
                    walk(obj, depth + 1)
        walk(f, 1)
    return "\n".join(lines)

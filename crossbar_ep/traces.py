"""HDF5 traces of a run for circuit designers: what the network and the arrays did.

One file per run (``traces.file`` in the run directory), schema in ``docs/hdf5_schema.md``.
What an epoch records is gathered in memory while it runs and written when it ends, in one
open-write-flush-close of the file: a run killed mid-epoch leaves the file closed and holding
every completed epoch; ``--resume`` drops any epoch the checkpoint does not hold and appends.

Read a file with :func:`open_run` (no knowledge of the layout needed) or ``crossbar-ep inspect``.
"""

from __future__ import annotations

import datetime
import errno
import os
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .energy import ENERGY_METRICS
from .errors import CrossbarEPError

SCHEMA_VERSION = 1

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


def _io_error(path: str, exc: Exception, action: str) -> TraceError:
    code = getattr(exc, "errno", None)
    hint = {errno.ENOSPC: "the disk is full: free space",
            errno.EACCES: "permission denied: make the run directory writable",
            errno.EROFS: "the file system is read-only: move the run directory"}.get(
        code, "check the path, free space and permissions")
    if action == "create":
        tail = "nothing was trained yet: fix this, or switch traces off (traces.enabled: false)"
    else:
        tail = (f"the checkpoint of the last completed epoch is kept: fix this and continue "
                f"with crossbar-ep run --resume {os.path.dirname(path) or '.'}")
    return TraceError(f"{path}: cannot {action} the trace file ({exc}); {hint}; {tail}")


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

    def _open_file(self, cfg_yaml: str, resume_epochs: int | None) -> None:
        if resume_epochs is None or not os.path.exists(self.path):
            if resume_epochs:
                raise TraceError(f"{self.path}: the trace file is missing but the run has "
                                 f"{resume_epochs} epochs: restore it, or switch traces off "
                                 f"(--set traces.enabled=false) to resume without traces")
            try:
                with self._h5("w", "create") as f:
                    f.attrs["crossbar_ep_version"] = __version__
                    f.attrs["schema_version"] = SCHEMA_VERSION
                    f.attrs["config_yaml"] = cfg_yaml
                    f.attrs["created_utc"] = datetime.datetime.now(
                        datetime.timezone.utc).isoformat(timespec="seconds")
                    f.create_group("epochs")
                    f.create_group("metrics")
            except OSError as exc:
                raise _io_error(self.path, exc, "create") from None
            return
        try:
            with self._h5("a", "reopen") as f:
                f.attrs["config_yaml"] = cfg_yaml
                for name in list(f["epochs"]):
                    if int(name) > resume_epochs:   # written after the last checkpoint
                        del f["epochs"][name]
                for ds in f["metrics"].values():
                    if ds.shape[0] > resume_epochs:
                        ds.resize((resume_epochs,))
        except (OSError, KeyError) as exc:
            raise TraceError(f"{self.path}: cannot reopen the trace file to resume ({exc}); "
                             f"move it aside to start a new one, or resume with "
                             f"--set traces.enabled=false") from None

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
            self.settler.trace = self
        for spec in self.t.tiles:
            name, ri, ci = parse_tile(spec)
            cb = self.crossbars.get(name)
            if cb is None:
                continue
            probe = _TileProbe(self.t.samples, cb.current_factor())
            rec["tiles"][(name, ri, ci)] = probe
            cb.probes[(ri, ci)] = probe
        self._phase = 0

    def phase(self, nudged: bool, S: list) -> None:
        """Settler hook at the start of a phase (S: states, index 1..L)."""
        if self._batch is None:
            return
        self._phase = int(nudged)
        for probe in self._batch["tiles"].values():
            probe.phase[0] = self._phase
        self._batch["traj"][PHASES[self._phase]].append(self._snap(S))

    def step(self, S: list) -> None:
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
            self.settler.trace = None
        for (name, ri, ci), _probe in rec["tiles"].items():
            self.crossbars[name].probes.pop((ri, ci), None)
        if self.pulses is not None and self.t.pulses:
            rec["pulses"] = {k: v.astype(np.int16) for k, v in self.pulses.last_counts.items()}
        e["batches"][rec["index"]] = rec
        self._batch = None

    def end_epoch(self, row: dict) -> None:
        """Append the epoch's records and metrics row to the file (one open-flush-close)."""
        e = self._epoch
        epoch = e["epoch"]
        totals = {}
        if self.pulses is not None and self.t.pulses and self.records_epoch(epoch):
            totals = self.pulses.take_device_totals()
            self.pulses.track_devices(False)
        try:
            with self._h5("a") as f:
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
                f.flush()
        except OSError as exc:
            raise _io_error(self.path, exc, "write") from None
        self._epoch = None

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

    >>> r = open_run("runs/x/traces.h5")
    >>> r.metrics["test_acc"], r.epochs, r.conductance(r.epochs[-1], "W1")["G_pos"]
    """

    def __init__(self, path: str):
        import h5py
        self.path = path
        try:
            self._f = h5py.File(path, "r")
        except OSError as exc:
            raise TraceError(f"{path}: not a readable HDF5 trace file ({exc})") from None
        if "epochs" not in self._f:
            self._f.close()
            raise TraceError(f"{path}: HDF5 file without an 'epochs' group: not a "
                             f"crossbar-ep trace file")

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # metadata
    @property
    def version(self) -> str:
        return str(self._f.attrs.get("crossbar_ep_version", ""))

    @property
    def schema_version(self) -> int:
        return int(self._f.attrs.get("schema_version", 0))

    @property
    def config(self) -> dict:
        """The run's resolved config as a plain dict."""
        import yaml
        return yaml.safe_load(str(self._f.attrs["config_yaml"]))

    @property
    def epochs(self) -> list:
        """Epoch numbers with a group in the file, ascending."""
        return sorted(int(k) for k in self._f["epochs"])

    @property
    def metrics(self) -> dict:
        """Per-epoch metrics: name -> float array (index e holds epoch e + 1)."""
        return {k: ds[()] for k, ds in self._f["metrics"].items()}

    def _epoch(self, epoch: int):
        key = f"epochs/{epoch:04d}"
        if key not in self._f:
            raise KeyError(f"{self.path}: no epoch {epoch} (has {self.epochs})")
        return self._f[key]

    def _read_group(self, g) -> dict:
        return {k: v[()] for k, v in g.items()} if g is not None else {}

    def settle(self, epoch: int) -> dict:
        """Per-batch settle statistics of an epoch: name -> array (batches,)."""
        return self._read_group(self._epoch(epoch).get("settle"))

    def conductance(self, epoch: int, matrix: str) -> dict:
        """{'G_pos': (n_out, n_in) S, 'G_neg': ...} of one array at the end of an epoch."""
        return self._read_group(self._epoch(epoch).get(f"conductance/{matrix}"))

    def weights(self, epoch: int) -> dict:
        """Effective weight matrices at the end of an epoch: name -> (n_out, n_in)."""
        return self._read_group(self._epoch(epoch).get("weights"))

    def matrices(self, epoch: int) -> list:
        g = self._epoch(epoch).get("conductance")
        return sorted(g) if g is not None else []

    def pulse_totals(self, epoch: int) -> dict:
        """Pulses per device summed over an epoch: matrix -> (n_out, n_in) int."""
        g = self._epoch(epoch).get("pulses")
        return {k: v["per_device_total"][()] for k, v in g.items()} if g is not None else {}

    def batches(self, epoch: int) -> list:
        g = self._epoch(epoch).get("batches")
        return sorted(int(k) for k in g) if g is not None else []

    def _batch(self, epoch: int, batch: int):
        g = self._epoch(epoch).get(f"batches/{batch:05d}")
        if g is None:
            raise KeyError(f"{self.path}: epoch {epoch} has no recorded batch {batch} "
                           f"(has {self.batches(epoch)})")
        return g

    def trajectories(self, epoch: int, batch: int, phase: str = "free") -> dict:
        """Layer k -> states (steps + 1, samples, n_k) of a recorded batch and phase."""
        g = self._batch(epoch, batch).get(f"trajectories/{phase}")
        return {int(k[1:]): v[()] for k, v in g.items()} if g is not None else {}

    def batch_pulses(self, epoch: int, batch: int) -> dict:
        """Signed pulse counts per device of a recorded batch's update: matrix -> array."""
        return self._read_group(self._batch(epoch, batch).get("pulses"))

    def tiles(self, epoch: int, batch: int) -> list:
        g = self._batch(epoch, batch).get("tiles")
        return sorted(g) if g is not None else []

    def tile_reads(self, epoch: int, batch: int, tile: str, direction: str = "forward") -> dict:
        """{'phase', 'current_A', 'adc_code'} of one recorded tile ('W1_r0_c0')."""
        return self._read_group(self._batch(epoch, batch).get(f"tiles/{tile}/{direction}"))


def open_run(path: str) -> TraceRun:
    """Open a trace file (or a run directory holding ``traces.h5``) for reading."""
    if os.path.isdir(path):
        from .config import config_from_dict, read_yaml
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
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise TraceError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
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

"""HDF5 traces of a run for circuit designers: what the network and the arrays did.

One file per run (``traces.file`` in the run directory), schema in ``docs/hdf5_schema.md``.
What an epoch records is gathered in memory while it runs and written when it ends: built as
an HDF5 image in memory, saved as a side file, then copied into the trace file in one
open-write-flush-close (:mod:`crossbar_ep.io.trace_store`): a run killed mid-epoch leaves the
file closed and holding every completed epoch, a full disk fails with a clear error, and
``--resume`` drops any epoch the checkpoint does not hold and appends.

Read a file with :func:`open_run` (no knowledge of the layout needed) or ``crossbar-ep inspect``.
Readers and the writer coexist: a reader opens the file only for each access, under a shared
lock that waits for an epoch's write to finish; the writer retries a busy file for
``LOCK_WAIT_S`` and, if another program still holds it, writes that epoch to a side file
``<stem>.pending-NNNN.h5`` that is merged at the next successful open (and read by
:func:`open_run` meanwhile).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from crossbar_ep.io.trace_files import (  # noqa: F401  (the reader's names live here too)
    LOCK_WAIT_S,
    METRIC_UNITS,
    PHASES,
    SCHEMA_VERSION,
    TraceError,
    io_hint,
    pending_paths,
)
from crossbar_ep.io.trace_reader import TraceRun, describe_tree, open_run  # noqa: F401
from crossbar_ep.io.trace_store import TraceStore, image_of, memory_file
from crossbar_ep.schema import parse_tile

# units and descriptions of the per-epoch metrics (others are stored with unit "-")




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
                 tau_s: float = 1e-7, identity: dict | None = None, same_config=None,
                 new_file: bool = False):
        self.t = tcfg
        self.tau_s = tau_s
        self.path = os.path.join(run_dir, tcfg.file)
        self.learner = learner
        self.settler = learner.settler
        self.pulses = learner.pulses
        self.crossbars = self.pulses.crossbars if self.pulses is not None else {}
        self._epoch = None
        self._batch = None
        self.store = TraceStore(self.path, self._write_metrics, identity)
        if new_file:
            self.store.replace(cfg_yaml)
        elif resume_epochs is None:
            self.store.create(cfg_yaml)
        else:
            self.store.reopen(cfg_yaml, resume_epochs, same_config)

    def finish(self) -> None:
        """Merge side files left by a busy trace file (end of a run); says so if it can't."""
        self.store.finish()

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
        net = self.learner.net
        if net is not None:    # G+, G- or weights (f4) and per-device pulse totals (i4)
            n += 12 * sum(W.size for W in net.W.values())
        return n

    def end_epoch(self, row: dict) -> None:
        """Append the epoch's records and metrics row to the file: built in memory, written
        to a side file, then copied in (:class:`~crossbar_ep.io.trace_store.TraceStore`)."""
        e = self._epoch
        epoch = e["epoch"]
        totals = {}
        if self.pulses is not None and self.t.pulses and self.records_epoch(epoch):
            totals = self.pulses.take_device_totals()
            self.pulses.track_devices(False)
        with memory_file(f"epoch-{epoch}") as side:
            self.store.stamp(side, None)
            side.attrs["pending_for"] = os.path.basename(self.path)
            self._write_epoch(side, row, totals)
            image = image_of(side)
        self.store.append(epoch, image)
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
                for side, G in zip(("G_pos", "G_neg"), cb.conductances()):
                    if G is None:
                        continue
                    self._ds(g, f"conductance/{name}/{side}",
                             G.astype(np.float32), "S",
                             f"conductance of the {'G+' if side == 'G_pos' else 'G-'} device "
                             f"of each pair" if cb.differential else
                             "conductance of each device (reference column at mid range)",
                             "(n_out, n_in): output (column) x input (row)")
                a = g[f"conductance/{name}"].attrs
                a["weight_scale"] = cb.scale
                a["g_min_S"], a["g_max_S"] = cb.card.g_min_S, cb.card.g_max_S
                a["mapping"] = cb.signed
                a["weights"] = ("W = weight_scale * (G_pos - G_neg) / (g_max_S - g_min_S)"
                                if cb.differential else
                                "W = weight_scale * (2 (G_pos - g_min_S) / (g_max_S - g_min_S) "
                                "- 1)")
        net = self.learner.net
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
                self._ds(g, f"trajectories/{phase}/s{k + 1}", arr, "state units",
                         f"layer {k + 1} neuron states (dense nets: the activation's output; "
                         f"conv nets: the pre-activation map flattened in (h, w, c) order) of "
                         f"the first recorded samples, {phase} phase: index 0 is the "
                         f"starting state, then one per step", "(steps + 1, samples, neurons)")
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


# ---------------------------------------------------------------------- reading



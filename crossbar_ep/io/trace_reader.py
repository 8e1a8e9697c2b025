"""Reading HDF5 trace files without knowing their layout: :func:`open_run` returns a
:class:`TraceRun` (metrics, settle statistics, conductances, trajectories, tile reads, pulses
as NumPy arrays); ``crossbar-ep inspect`` prints the tree with :func:`describe_tree`."""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

from crossbar_ep.io.trace_files import TraceError, pending_epoch, pending_paths, reading


class TraceRun:
    """Read access to a trace file without knowing its layout (NumPy arrays, metadata).

    The file is opened only during each access (see :func:`reading`), so holding a
    ``TraceRun`` never stops a run from writing; epochs still in side files
    (``<stem>.pending-NNNN.h5``) are read as well.

    >>> r = open_run("runs/x/traces.h5")
    >>> r.metrics["test_acc"], r.epochs, r.conductance(r.epochs[-1], "W1")["G_pos"]
    """

    def __init__(self, path: str):
        self.path = path
        with reading(path) as f:
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
        with reading(self.path) as f:
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
            with reading(path) as f:
                found.update(int(k) for k in f["epochs"])
        return sorted(found)

    @property
    def metrics(self) -> dict:
        """Per-epoch metrics: name -> float array (index e holds epoch e + 1)."""
        with reading(self.path) as f:
            out = {k: ds[()] for k, ds in f["metrics"].items()}
        for path in pending_paths(self.path):
            e = pending_epoch(path)
            with reading(path) as f:
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
            with reading(path) as f:
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
    with reading(path) as f:
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

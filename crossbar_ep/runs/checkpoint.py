"""Checkpoints: one atomic .npz per run, assembled from the operators' state dicts, with the
optimiser and random-generator states, the history and the config it was trained with."""

from __future__ import annotations

import json
import os

import numpy as np

from crossbar_ep.errors import CheckpointError
from crossbar_ep.model.network import Network
from crossbar_ep.runs.rundir import CHECKPOINT, RunDir, config_hash, hashed_config


def save_checkpoint(run) -> None:
    """Write ``run``'s (a :class:`~crossbar_ep.runs.train.Run`) checkpoint atomically."""
    net, opt = run.net, run.learner.opt
    arrays = network_state(net)
    arrays.update({f"opt:{k}": v for k, v in opt.state_arrays().items()})
    meta = {"epochs_done": run.epochs_done, "opt_t": opt.t,
            "rng_state": run.rng.bit_generator.state, "history": run.history,
            "format": 2, "config": hashed_config(run.cfg)}
    meta["config_sha256"] = config_hash(meta["config"])
    if getattr(run, "run_id", None):
        meta["run_id"] = run.run_id
    pulses = run.learner.pulses
    if pulses is not None:
        meta["xb_rng_state"] = pulses.rng.bit_generator.state
    arrays["meta"] = np.array(json.dumps(meta))
    RunDir(run.out_dir).write(CHECKPOINT, lambda fh: np.savez(fh, **arrays))


def network_state(net: Network) -> dict:
    """Checkpoint arrays of a network, assembled from its operators' state dicts:
    ``W:<name>`` (trained) or ``fixed:<name>`` (fixed feedback) holds every operator's dense
    matrix, ``xb:<name>:<key>`` the rest of an operator's state (a crossbar array's devices),
    ``b:<k>`` the biases."""
    trained = {p.name for p in net.projections}
    arrays = {}
    for name, op in net.ops.items():
        arrays[f"{'W' if name in trained else 'fixed'}:{name}"] = op.dense()
        state = op.state_dict()
        if set(state) != {"W"}:
            arrays.update({f"xb:{name}:{k}": v for k, v in state.items()})
    arrays.update({f"b:{k}": v for k, v in net.b.items()})
    return arrays


def load_network_state(net: Network, arrays: dict, path: str) -> None:
    """Restore what :func:`network_state` saved, checking names and shapes."""
    trained = {p.name for p in net.projections}
    for name, op in net.ops.items():
        key = f"{'W' if name in trained else 'fixed'}:{name}"
        if key not in arrays:
            raise CheckpointError(f"{path}: checkpoint lacks {key}; it does not match the "
                                  f"run's config.yaml")
        if arrays[key].shape != op.shape:
            raise CheckpointError(f"{path}: {key} has shape {arrays[key].shape}, the config "
                                  f"needs {op.shape}")
        wanted = op.state_dict()
        if set(wanted) == {"W"}:
            op.load_state_dict({"W": arrays[key]})
            continue
        state = {k: arrays[f"xb:{name}:{k}"] for k in wanted if f"xb:{name}:{k}" in arrays}
        missing = sorted(set(wanted) - set(state))
        if missing and not getattr(op, "optional_state", set()) >= set(missing):
            raise CheckpointError(f"{path}: checkpoint lacks the state of {name} "
                                  f"({', '.join(missing)}); it does not match the run's "
                                  f"config.yaml")
        op.load_state_dict(state)
    for k, b in net.b.items():
        key = f"b:{k}"
        if key not in arrays or arrays[key].shape != b.shape:
            raise CheckpointError(f"{path}: checkpoint lacks {key} (shape {b.shape}); it does "
                                  f"not match the run's config.yaml")
        np.copyto(b, arrays[key])


def read_checkpoint(out_dir: str, arrays: bool = True) -> tuple[dict, dict]:
    """(meta, arrays) of a run's checkpoint; ``arrays=False`` reads the meta only."""
    return RunDir(out_dir).read_checkpoint(arrays)


def check_finite(arrays: dict, path: str) -> None:
    """Refuse a checkpoint whose arrays hold NaN or inf: no healthy run saves one (a diverged
    state is never checkpointed), so the file is damaged or was written by other means, and
    resuming would repeat the failure on every attempt."""
    for key, a in arrays.items():
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise CheckpointError(
                f"{path}: {key} holds {bad} NaN or inf value{'s' if bad > 1 else ''}; the "
                f"checkpoint is damaged (a run never saves a diverged state), so resuming it "
                f"would fail the same way every time.  Restore the file from a backup, or "
                f"start the run again from its config: crossbar-ep run "
                f"{os.path.join(os.path.dirname(path), 'config.yaml')} --out "
                f"{os.path.dirname(path)} --overwrite")


def load_checkpoint(run, meta: dict | None = None, arrays: dict | None = None) -> None:
    """Restore ``run`` (a :class:`~crossbar_ep.runs.train.Run`) from its checkpoint
    (``meta`` and ``arrays`` as :func:`read_checkpoint` gives them, read here if None)."""
    path = os.path.join(run.out_dir, CHECKPOINT)
    if meta is None or arrays is None:
        meta, arrays = read_checkpoint(run.out_dir)
    check_finite(arrays, path)
    net, opt = run.net, run.learner.opt
    pulses = run.learner.pulses
    if pulses is not None and "xb_rng_state" not in meta:
        raise CheckpointError(f"{path}: checkpoint holds no crossbar state but the config "
                              f"enables the crossbar backend")
    load_network_state(net, arrays, path)
    opt.load_state_arrays({k[4:]: v for k, v in arrays.items() if k.startswith("opt:")},
                          meta["opt_t"])
    run.rng.bit_generator.state = meta["rng_state"]
    run.history = meta["history"]
    if pulses is not None:
        pulses.rng.bit_generator.state = meta["xb_rng_state"]
    if run.learner.settler is not None:
        run.learner.settler.refresh()

"""Checkpoints: one atomic .npz per run, assembled from the operators' state dicts, with the
optimiser and random-generator states, the history and the config it was trained with."""

from __future__ import annotations

import json
import os

import numpy as np

from crossbar_ep.errors import CheckpointError
from crossbar_ep.model.network import Network
from crossbar_ep.runs.rundir import (
    CHECKPOINT,
    _atomic_write,
    config_hash,
    hashed_config,
)


def save_checkpoint(run) -> None:
    """Write ``run``'s (a :class:`~crossbar_ep.runs.train.Run`) checkpoint atomically."""
    net, opt = run.net, run.learner.opt
    arrays = network_state(net)
    arrays.update({f"opt:{k}": v for k, v in opt.state_arrays().items()})
    meta = {"epochs_done": run.epochs_done, "opt_t": opt.t,
            "rng_state": run.rng.bit_generator.state, "history": run.history,
            "format": 2, "config": hashed_config(run.cfg)}
    meta["config_sha256"] = config_hash(meta["config"])
    pulses = run.learner.pulses
    if pulses is not None:
        meta["xb_rng_state"] = pulses.rng.bit_generator.state
    arrays["meta"] = np.array(json.dumps(meta))
    _atomic_write(os.path.join(run.out_dir, CHECKPOINT), lambda fh: np.savez(fh, **arrays))


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


def _read_checkpoint(out_dir: str, arrays: bool = True) -> tuple[dict, dict]:
    """(meta, arrays) of a run's checkpoint; ``arrays=False`` reads the meta only."""
    path = os.path.join(out_dir, CHECKPOINT)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            data = {k: z[k] for k in z.files if k != "meta"} if arrays else {}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint; the run stopped before its first "
                              f"epoch ended: start it again without --resume") from None
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    return meta, data


def load_checkpoint(run) -> None:
    """Restore ``run`` (a :class:`~crossbar_ep.runs.train.Run`) from its checkpoint."""
    path = os.path.join(run.out_dir, CHECKPOINT)
    meta, arrays = _read_checkpoint(run.out_dir)
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

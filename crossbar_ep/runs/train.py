"""The training loop: run directory, per-epoch metrics, atomic checkpoints, resume.

A run directory holds ``config.yaml`` (fully resolved), ``metrics.csv`` and
``metrics.json`` (one row per epoch), ``checkpoint.npz`` (written atomically after every
epoch: weights, optimiser state, random-generator state, history, the config it was trained
with) and ``summary.txt``.  A process that starts or resumes a run holds an exclusive lock on
``run.lock`` in the directory until the run object is released (docs/runs.md).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np

from crossbar_ep.config.build import build_network, lr_factor, make_learner, make_optimizer
from crossbar_ep.config.experiment import Config, config_from_dict
from crossbar_ep.errors import CheckpointError, ConfigError, CrossbarEPError
from crossbar_ep.io.data import Dataset, load_dataset
from crossbar_ep.model.learners import cross_entropy_sum
from crossbar_ep.model.network import Network
from crossbar_ep.runs import aux
from crossbar_ep.runs.checkpoint import (
    CHECKPOINT,
    _read_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from crossbar_ep.runs.rundir import (
    LOCK,
    _atomic_text,
    _atomic_write,
    _changes_text,
    _check_out_dir,
    _config_yaml,
    _DirLock,
    _makedirs,
    _remove_run_files,
    _run_config,
    config_changes,
    config_hash,
    default_run_dir,
    hashed_config,
    load_experiment,  # noqa: F401  (the CLI's entry)
)

METRIC_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "val_acc",
               "epoch_time_s", "samples_per_s", "settle_residual", "settle_steps",
               "settle_time_free_s", "settle_time_nudged_s", "pulses_total", "at_bound_mean",
               "energy_array_J", "energy_dac_J", "energy_adc_J", "energy_program_J",
               "energy_total_J", "ir_drop_rel")
MAX_ABS_WEIGHT = 1e6          # |w| or |b| above this (or NaN/inf) stops a run as diverged
FREE_MARGIN_BYTES = 64 << 20  # free space kept beyond an epoch's estimated writes


class DivergenceError(CrossbarEPError):
    """Training produced non-finite or exploding values; the last checkpoint is kept."""


class RunWriteError(CrossbarEPError):
    """A run's files cannot be written (full disk, permissions)."""


@dataclass
class Run:
    """Everything one training run holds in memory."""

    cfg: Config
    data: Dataset
    net: Network
    learner: object
    rng: np.random.Generator
    out_dir: str
    history: list = field(default_factory=list)
    recorder: object = None   # traces.Recorder when traces.enabled
    lock: object = None       # _DirLock held while this run may write its directory

    @property
    def epochs_done(self) -> int:
        return len(self.history)


def setup(cfg: Config, out_dir: str, data: Dataset | None = None) -> Run:
    """Load data, build and initialise the network from ``training.seed``."""
    dtype = np.dtype(cfg.training.dtype)
    if data is None:
        data = load_dataset(cfg.data, dtype, seed=cfg.training.seed)
    rng = np.random.default_rng(cfg.training.seed)
    net = build_network(cfg, data.n_features, data.n_classes, rng)
    opt = make_optimizer(cfg.training, net.trainable(), net.lr)
    learner = make_learner(cfg, net, opt)
    run = Run(cfg, data, net, learner, rng, out_dir)
    aux.attach(run)
    return run


# ---------------------------------------------------------------------- run directory


# ---------------------------------------------------------------------- files


def write_curves(run: Run) -> None:
    """``curves.png``: loss and accuracy versus epoch (rewritten after every epoch)."""
    from crossbar_ep.plots.curves import plot_curves

    title = f"{run.cfg.name} ({run.cfg.training.algorithm})"
    _atomic_write(os.path.join(run.out_dir, "curves.png"),
                  lambda fh: plot_curves(run.history, fh, title))


def write_metrics(run: Run) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_KEYS, extrasaction="ignore")
    w.writeheader()
    for row in run.history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_KEYS})
    _atomic_text(os.path.join(run.out_dir, "metrics.csv"), buf.getvalue())
    _atomic_text(os.path.join(run.out_dir, "metrics.json"), json.dumps(run.history, indent=1))


# ---------------------------------------------------------------------- loop
def evaluate(learner, x: np.ndarray, y: np.ndarray, batch: int,
             heads: dict | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the free-phase prediction; ``heads`` (head index ->
    0) is filled with the auxiliary heads' correct counts from the same free phases."""
    loss, correct = 0.0, 0
    for i in range(0, x.shape[0], batch):
        if heads:
            res = learner.settle(x[i:i + batch])
            p = res.p
            for e in heads:
                heads[e] += int((res.heads[e].argmax(1) == y[i:i + batch]).sum())
        else:
            p = learner.predict(x[i:i + batch])
        loss += cross_entropy_sum(p, y[i:i + batch])
        correct += int((p.argmax(1) == y[i:i + batch]).sum())
    n = max(1, x.shape[0])
    return loss / n, correct / n


def train_epoch(run: Run, epoch: int, progress: bool = True) -> dict:
    cfg, data = run.cfg, run.data
    n, bs = data.x_train.shape[0], cfg.training.batch_size
    perm = run.rng.permutation(n)
    opt = run.learner.opt
    if cfg.training.lr_schedule != "constant":
        if opt is not None:
            for name, base in run.net.lr.items():   # set per epoch from the base rates
                opt.lrs[name] = lr_factor(cfg.training, epoch, base)
        for op in run.net.ops.values():     # crossbar arrays: the pulse gain follows it
            if getattr(op, "lr_base", None) is not None:
                op.lr = lr_factor(cfg.training, epoch, op.lr_base)
    n_batches = (n + bs - 1) // bs
    bar = _bar(n_batches, f"epoch {epoch}/{cfg.training.epochs}", progress)
    rec = run.recorder
    if rec is not None:
        rec.begin_epoch(epoch, n_batches)
    loss = correct = seen = 0
    if run.learner.settler is not None and run.learner.settler.meter is not None:
        run.learner.settler.meter.reset()
    resid, steps, t_free, t_nudged = [], [], [], []
    t0 = time.perf_counter()
    for i in range(n_batches):
        idx = perm[i * bs:(i + 1) * bs]
        if rec is not None:
            rec.begin_batch(i)
        try:
            st = run.learner.train_batch(data.x_train[idx], data.y_train[idx])
        except (FloatingPointError, ZeroDivisionError):   # NaN in a fastmath kernel
            _check_finite(run, epoch, i, float("nan"), data.x_train[idx])   # always raises
        if rec is not None:
            rec.end_batch(st)
        _check_finite(run, epoch, i, st.loss_sum, data.x_train[idx])
        loss += st.loss_sum
        correct += st.correct
        seen += idx.size
        resid.append(st.residual)
        steps.append(st.steps)
        t_free.append(st.free_time_tau)
        t_nudged.append(st.nudged_time_tau)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss / seen:.4f}", acc=f"{100 * correct / seen:.2f}%",
                            refresh=False)
    train_time = time.perf_counter() - t0
    settler = run.learner.settler
    meter = settler.meter if settler is not None else None
    energy = {}
    pulses = run.learner.pulses
    if meter is not None:
        per = cfg.crossbar.periphery
        program = sum(s.get("program_J", 0.0) for s in pulses.stats.values()) if pulses else 0.0
        energy = meter.take(seen, per.e_dac_J, per.e_adc_J, program)
    names = aux.head_names(run) if cfg.training.algorithm == "ep" else {}
    head_ok = dict.fromkeys(names, 0)
    test_loss, test_acc = evaluate(run.learner, data.x_test, data.y_test,
                                   cfg.training.eval_batch_size, head_ok)
    if not np.isfinite(test_loss):
        bad = "holds NaN or inf values" if not np.isfinite(data.x_test).all() else \
            "gives non-finite states (settling diverged: lower the beta values)"
        raise DivergenceError(f"epoch {epoch}: the test-set loss is {test_loss}: the test set "
                              f"{bad}; {_kept(run, epoch)}")
    val_acc = None
    if data.x_val is not None:
        val_acc = evaluate(run.learner, data.x_val, data.y_val, cfg.training.eval_batch_size)[1]
    if meter is not None:
        meter.reset()          # evaluation reads are not training energy
    xb = {}
    if pulses is not None:
        xb = pulses.take_stats()
    row = {"epoch": epoch, "train_loss": loss / seen, "train_acc": correct / seen,
           "test_loss": test_loss, "test_acc": test_acc, "val_acc": val_acc,
           "epoch_time_s": time.perf_counter() - t0, "samples_per_s": seen / train_time,
           "settle_residual": float(np.mean(resid)), "settle_steps": float(np.mean(steps))}
    if cfg.training.algorithm == "ep":   # settling time in seconds: tau_s x integrated tau
        tau = cfg.settling.tau_s
        row["settle_time_free_s"] = tau * float(np.mean(t_free))
        row["settle_time_nudged_s"] = tau * float(np.mean(t_nudged))
    row.update(energy)
    row.update(aux.epoch_metrics(run))
    row.update({f"head_acc_{names[e]}": c / max(1, data.x_test.shape[0])
                for e, c in head_ok.items()})
    if pulses is not None and not cfg.crossbar.wires.r_wire_row_ohm == \
            cfg.crossbar.wires.r_wire_col_ohm == cfg.crossbar.wires.r_driver_ohm == \
            cfg.crossbar.wires.r_sense_ohm == 0.0:
        dev = [cb.ir_drop_deviation() for cb in pulses.crossbars.values()]
        row["ir_drop_rel"] = float(np.sqrt(sum(d for d, _ in dev) / max(sum(w for _, w in dev),
                                                                        1e-300)))
    if xb:
        row["pulses_total"] = int(sum(v["pulses"] for v in xb.values()))
        row["at_bound_mean"] = float(np.mean([v["at_bound"] for v in xb.values()]))
        for k in ("fast_pulses", "transfer_reads", "transfer_pulses",   # Tiki-Taka rules
                  "calibration_reads"):                               # drift compensation
            if any(k in v for v in xb.values()):
                row[f"{k}_total"] = int(sum(v.get(k, 0) for v in xb.values()))
        row["crossbar"] = xb
    if bar is not None:
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", acc=f"{100 * row['train_acc']:.2f}%",
                        test=f"{100 * test_acc:.2f}%")
        bar.close()
    return row


def _kept(run: Run, epoch: int) -> str:
    if epoch <= 1:
        return "nothing was saved; fix it and start the run again"
    return (f"the checkpoint of epoch {epoch - 1} in {run.out_dir} is kept (the diverged "
            f"state is not saved): fix the cause (training settings live in "
            f"{run.out_dir}/config.yaml) and continue with crossbar-ep run --resume "
            f"{run.out_dir}, or start again")


def _check_finite(run: Run, epoch: int, batch: int, loss: float, x: np.ndarray) -> None:
    """Stop with :class:`DivergenceError` on a non-finite loss or a weight or bias that is
    NaN/inf or above ``MAX_ABS_WEIGHT`` in magnitude (two reductions per matrix per batch)."""
    where = f"training diverged at epoch {epoch}, batch {batch}"
    cause = ("likely cause: the learning rate (training.lr) or the nudge strengths "
             "(model.beta_f, model.beta_i) are too large")
    for name, w in run.net.trainable():
        big = max(float(w.max()), -float(w.min())) if w.size else 0.0
        if not big <= MAX_ABS_WEIGHT:      # also catches NaN
            lr = (run.learner.opt.lrs if run.learner.opt is not None else run.net.lr).get(name)
            lr = f" (learning rate {lr:g})" if lr is not None else ""
            raise DivergenceError(f"{where}: {name}{lr} reached "
                                  f"max |w| = {big:.3g} (limit {MAX_ABS_WEIGHT:g}); {cause}; "
                                  f"{_kept(run, epoch)}")
    if not np.isfinite(loss):
        if not np.isfinite(x).all():
            raise DivergenceError(f"{where}: the input batch holds NaN or inf values: the "
                                  f"data set is corrupt; {_kept(run, epoch)}")
        raise DivergenceError(f"{where}: the loss is {loss} (non-finite states after "
                              f"settling); {cause}; {_kept(run, epoch)}")


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=True, file=sys.stderr,
                dynamic_ncols=True)


def _check_space(run: Run, epoch: int, traces_bytes: int) -> None:
    """Stop before writing epoch ``epoch`` when the run directory's file system lacks room
    for its traces, a new checkpoint beside the old one and ``FREE_MARGIN_BYTES``."""
    ck = os.path.join(run.out_dir, CHECKPOINT)
    if os.path.exists(ck):
        ck_bytes = os.path.getsize(ck)
    else:                   # parameters, optimiser slots, device states
        ck_bytes = 10 * sum(a.nbytes for _, a in run.net.trainable())
    need = traces_bytes + ck_bytes + FREE_MARGIN_BYTES
    try:
        free = shutil.disk_usage(run.out_dir).free
    except OSError:
        return
    if free < need:
        mib = 1 << 20
        kept = (f"the checkpoint of epoch {epoch - 1} is kept: free space and continue with "
                f"crossbar-ep run --resume {run.out_dir}" if epoch > 1 else
                "no epoch was saved: free space and start again")
        raise RunWriteError(f"{run.out_dir}: only {free / mib:.0f} MiB free, epoch {epoch} "
                            f"needs about {need / mib:.0f} MiB (traces {traces_bytes / mib:.0f}"
                            f", checkpoint {ck_bytes / mib:.0f}, margin "
                            f"{FREE_MARGIN_BYTES / mib:.0f}); the disk is nearly full; nothing "
                            f"of epoch {epoch} was written and {kept}")


def _write(path: str, write, kept: str) -> None:
    """Run ``write``; an OSError becomes a :class:`RunWriteError` naming ``path``."""
    from crossbar_ep.io.traces import io_hint
    try:
        write()
    except OSError as exc:
        raise RunWriteError(f"{path}: cannot write ({exc.strerror or exc}); {io_hint(exc)}; "
                            f"{kept}") from None


def fit(run: Run, progress: bool = True, on_epoch=None) -> dict:
    """Train from ``run.epochs_done`` to ``cfg.training.epochs``, checkpointing each epoch.

    Stops with :class:`DivergenceError` on non-finite or exploding values and with
    :class:`RunWriteError` when the disk is (nearly) full or a file cannot be written; the
    checkpoint of the last completed epoch stays in both cases."""
    d = run.out_dir
    for epoch in range(run.epochs_done + 1, run.cfg.training.epochs + 1):
        row = train_epoch(run, epoch, progress)
        rec = run.recorder
        _check_space(run, epoch, rec.pending_bytes() if rec is not None else 0)
        run.history.append(row)
        old = (f"the checkpoint of epoch {epoch - 1} is kept: fix this and continue with "
               f"crossbar-ep run --resume {d}" if epoch > 1 else
               "no epoch was saved: fix this and start again")
        if rec is not None:   # traces first: if they fail, the last checkpoint stays
            rec.end_epoch(row)
        _write(os.path.join(d, CHECKPOINT), lambda: save_checkpoint(run), old)
        new = (f"the checkpoint holds epoch {epoch}: fix this and continue with "
               f"crossbar-ep run --resume {d}")
        _write(os.path.join(d, "metrics.csv"), lambda: write_metrics(run), new)
        _write(os.path.join(d, "curves.png"), lambda: write_curves(run), new)
        if on_epoch is not None:
            on_epoch(row)
    if run.recorder is not None:
        run.recorder.finish()
    s = summary(run)
    _write(os.path.join(d, "summary.txt"),
           lambda: _atomic_text(os.path.join(d, "summary.txt"), s["line"] + "\n"),
           "training finished and the checkpoint holds every epoch")
    return s


def summary(run: Run) -> dict:
    h = run.history
    if not h:
        return {"line": f"{run.cfg.name}: no epoch completed"}
    best = max(h, key=lambda r: r["test_acc"])
    total = sum(r["epoch_time_s"] for r in h)
    line = (f"{run.cfg.name} [{run.cfg.training.algorithm}]: best test {100 * best['test_acc']:.2f}% "
            f"(epoch {best['epoch']}), final test {100 * h[-1]['test_acc']:.2f}%, final train "
            f"{100 * h[-1]['train_acc']:.2f}%, {len(h)} epochs in {total / 60:.1f} min; "
            f"run dir {run.out_dir}")
    return {"line": line, "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
            "final_test_acc": h[-1]["test_acc"], "epochs": len(h), "time_s": total}


def start(cfg: Config, out_dir: str | None = None, data: Dataset | None = None,
          overwrite: bool = False) -> Run:
    """A fresh, locked run directory with the resolved config written into it.

    Refuses a folder that is not empty unless it holds this same experiment stopped before
    its first checkpoint; ``overwrite`` deletes an earlier run's files there instead."""
    out_dir = out_dir or default_run_dir(cfg)
    busy = os.path.isfile(os.path.join(out_dir, LOCK))
    lock = _DirLock(out_dir) if busy else None   # in use by another process: say so first
    _check_out_dir(cfg, out_dir, overwrite)
    _makedirs(out_dir)
    lock = lock or _DirLock(out_dir)
    _check_out_dir(cfg, out_dir, overwrite)   # again: another process may have written here
    if overwrite:
        _remove_run_files(out_dir)
    run = setup(cfg, out_dir, data)
    run.lock = lock
    _atomic_text(os.path.join(out_dir, "config.yaml"), _config_yaml(cfg))
    _atomic_text(os.path.join(out_dir, "graph.json"), json.dumps(network_graph(run.net), indent=1))
    attach_recorder(run, None)
    return run


def network_graph(net) -> dict:
    """The drawn topology of a run (``graph.json``): layer sizes, trained forward links,
    feedback links (gain, tied matrix or fixed random) and nudge paths."""
    return {"sizes": list(net.sizes),
            "forward": [{"name": p.name, "src": p.src, "dst": p.dst, "scale": p.scale}
                        for p in net.projections],
            "feedback": [{"name": f.name, "src": f.src, "dst": f.dst, "gain": f.scale,
                          "tied": f.tied} for f in net.feedbacks],
            "blocks": [{"op": b.op, "src": b.src, "dst": b.dst, "gain": b.gain,
                        "transposed": b.transposed} for b in net.blocks]}


def attach_recorder(run: Run, resume_epochs: int | None) -> None:
    """Open the run's trace file when ``traces.enabled`` (new, or trimmed to the checkpoint)."""
    if not run.cfg.traces.enabled:
        return
    import yaml

    from crossbar_ep.io.traces import Recorder
    run.recorder = Recorder(run.cfg.traces, run.out_dir,
                            yaml.safe_dump(run.cfg.to_dict(), sort_keys=False), run.learner,
                            resume_epochs, run.cfg.settling.tau_s)


def _with_defaults(stored: dict) -> dict:
    """A checkpoint's stored config resolved by this version: keys added since it was
    written take their defaults (which keep the behaviour they were added with), so they are
    not changes; a stored config this version cannot read is compared as it is."""
    try:
        return hashed_config(config_from_dict(stored, source="<checkpoint>"))
    except CrossbarEPError:
        return stored


def resume(out_dir: str, epochs: int | None = None, data: Dataset | None = None,
           record: bool = True, accept_changes: bool = False,
           expect: Config | None = None) -> Run:
    """Reopen a run directory at its last checkpoint.

    ``epochs`` sets ``training.epochs`` (validated; at least the epochs done; written to
    config.yaml only when it extends the run).  A config.yaml edited since the checkpoint was
    written is refused unless ``accept_changes``; ``expect`` (a config the caller is about to
    train) must match the run's config.  ``record=False`` is for read-only use of the trained
    state: no lock, and the trace file is left alone."""
    cfg = _run_config(out_dir)
    lock = _DirLock(out_dir) if record or epochs is not None or accept_changes else None
    cfg_path = cfg.source
    meta, _ = _read_checkpoint(out_dir, arrays=False)
    done = int(meta.get("epochs_done", 0))
    if expect is not None:
        changes = config_changes(hashed_config(cfg), hashed_config(expect))
        if changes:
            raise CheckpointError(f"{out_dir}: holds a run of another config ("
                                  f"{_changes_text(changes)}); choose another output folder")
    new = hashed_config(cfg)
    accepted = False
    if "config_sha256" in meta and meta["config_sha256"] != config_hash(new):
        changes = config_changes(_with_defaults(meta.get("config", {})), new)
    else:
        changes = []
    if changes:
        if not accept_changes:
            raise CheckpointError(f"{cfg_path}: edited since the checkpoint was written ("
                                  f"{_changes_text(changes)}); the checkpoint was trained "
                                  f"with the old values.  Restore them, or continue with the "
                                  f"new ones: crossbar-ep run --resume {out_dir} "
                                  f"--accept-config-changes")
        accepted = True
    if epochs is not None:
        from crossbar_ep.config.experiment import apply_overrides
        raw = apply_overrides(cfg.to_dict(), [f"training.epochs={epochs}"])
        extended = config_from_dict(raw, source=f"{cfg_path} (--epochs {epochs})")
        if epochs < done:
            raise ConfigError(f"{cfg_path} (--epochs {epochs}): training.epochs: the run has "
                              f"already trained {done} epochs; give --epochs {done + 1} or "
                              f"more to extend it")
        if epochs > done and epochs != cfg.training.epochs:
            _atomic_text(cfg_path, _config_yaml(extended))
        cfg = replace(extended, source=cfg_path)   # epochs == done: nothing left to train; config.yaml stays as it is
    run = setup(cfg, out_dir, data)
    run.lock = lock
    load_checkpoint(run)
    if accepted:
        save_checkpoint(run)   # the checkpoint now records the accepted config
    if record and (run.epochs_done < cfg.training.epochs or _has_pending_traces(run)):
        attach_recorder(run, run.epochs_done)   # also merges epochs left in side files
    return run


def _has_pending_traces(run: Run) -> bool:
    if not run.cfg.traces.enabled:
        return False
    from crossbar_ep.io.traces import pending_paths
    return bool(pending_paths(os.path.join(run.out_dir, run.cfg.traces.file)))

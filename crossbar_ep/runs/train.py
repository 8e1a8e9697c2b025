"""The training loop: run directory, per-epoch metrics, atomic checkpoints, resume.

A run directory holds ``config.yaml`` (fully resolved), ``run.json`` (the run's id and config
hash), ``metrics.csv`` and ``metrics.json`` (one row per epoch), ``checkpoint.npz`` (written
atomically after every epoch: weights, optimiser state, random-generator state, history, the
config it was trained with) and ``summary.txt``.  A process that starts or resumes a run holds
an exclusive lock on ``run.lock`` in the directory until the run object is released
(docs/runs.md).  What an epoch's row holds beyond loss and accuracy comes from the observers
of :mod:`crossbar_ep.runs.metrics`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace

import numpy as np

from crossbar_ep.config.build import build_network, lr_factor, make_learner, make_optimizer
from crossbar_ep.config.experiment import Config, config_from_dict
from crossbar_ep.errors import CheckpointError, ConfigError, CrossbarEPError
from crossbar_ep.io.data import Dataset, load_dataset
from crossbar_ep.model.learners import cross_entropy_sum
from crossbar_ep.model.network import Network
from crossbar_ep.runs import aux, derived
from crossbar_ep.runs.checkpoint import CHECKPOINT, check_finite, load_checkpoint, save_checkpoint
from crossbar_ep.runs.health import MAX_ABS_WEIGHT, DivergenceError, check_finite as \
    check_weights
from crossbar_ep.runs.metrics import EpochMetrics, observers_for
from crossbar_ep.runs.progress import progress_bar
from crossbar_ep.runs.rundir import (  # noqa: F401  (load_experiment: the CLI's entry)
    LOCK,
    RunDir,
    changes_text,
    config_changes,
    config_hash,
    config_yaml,
    default_run_dir,
    hashed_config,
    load_experiment,
    new_run_id,
)

METRIC_KEYS = derived.METRIC_KEYS
FREE_MARGIN_BYTES = 64 << 20  # free space kept beyond an epoch's estimated writes
__all__ = ["MAX_ABS_WEIGHT", "DivergenceError", "RunWriteError", "Run", "setup", "start",
           "resume", "fit", "train_epoch", "evaluate", "summary"]


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
    lock: object = None       # the run directory's lock, held while this run may write it
    run_id: str = ""          # the run's identity (run.json, checkpoint, trace file)
    metrics: object = None    # the EpochMetrics observers, made at the first epoch

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    @property
    def dir(self) -> RunDir:
        return RunDir(self.out_dir)


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


def write_curves(run: Run) -> None:
    """``curves.png``: loss and accuracy versus epoch (rewritten after every epoch)."""
    derived.write_curves(run.dir, run.history, f"{run.cfg.name} ({run.cfg.training.algorithm})")


def write_metrics(run: Run) -> None:
    derived.write_metrics(run.dir, run.history)


# ---------------------------------------------------------------------- loop
def evaluate(learner, x: np.ndarray, y: np.ndarray, batch: int,
             heads: dict | None = None, watch=None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the free-phase prediction; ``heads`` (head index ->
    0) is filled with the auxiliary heads' correct counts from the same free phases;
    ``watch(p, y)`` sees every batch's prediction."""
    loss, correct = 0.0, 0
    for i in range(0, x.shape[0], batch):
        if heads:
            res = learner.settle(x[i:i + batch])
            p = res.p
            for e in heads:
                heads[e] += int((res.heads[e].argmax(1) == y[i:i + batch]).sum())
        else:
            p = learner.predict(x[i:i + batch])
        if watch is not None:
            watch(p, y[i:i + batch])
        loss += cross_entropy_sum(p, y[i:i + batch])
        correct += int((p.argmax(1) == y[i:i + batch]).sum())
    n = max(1, x.shape[0])
    return loss / n, correct / n


def _set_learning_rates(run: Run, epoch: int) -> None:
    cfg, opt = run.cfg, run.learner.opt
    if cfg.training.lr_schedule == "constant":
        return
    if opt is not None:
        for name, base in run.net.lr.items():   # set per epoch from the base rates
            opt.lrs[name] = lr_factor(cfg.training, epoch, base)
    for op in run.net.ops.values():     # crossbar arrays: the pulse gain follows it
        if getattr(op, "lr_base", None) is not None:
            op.lr = lr_factor(cfg.training, epoch, op.lr_base)


def train_epoch(run: Run, epoch: int, progress: bool = True) -> dict:
    """Train one epoch, evaluate, and return its metrics row."""
    cfg, data = run.cfg, run.data
    n, bs = data.x_train.shape[0], cfg.training.batch_size
    perm = run.rng.permutation(n)
    _set_learning_rates(run, epoch)
    n_batches = (n + bs - 1) // bs
    bar = progress_bar(n_batches, f"epoch {epoch}/{cfg.training.epochs}", "batch") \
        if progress else None
    rec = run.recorder
    if rec is not None:
        rec.begin_epoch(epoch, n_batches)
    if run.metrics is None:
        run.metrics = EpochMetrics(observers_for(run))
    metrics = run.metrics
    metrics.begin_epoch(run)
    loss = correct = seen = 0
    t0 = time.perf_counter()
    for i in range(n_batches):
        idx = perm[i * bs:(i + 1) * bs]
        if rec is not None:
            rec.begin_batch(i)
        try:
            st = run.learner.train_batch(data.x_train[idx], data.y_train[idx])
        except (FloatingPointError, ZeroDivisionError):   # NaN in a fastmath kernel
            check_weights(run, epoch, i, float("nan"), data.x_train[idx], _kept(run, epoch))
            raise
        if rec is not None:
            rec.end_batch(st)
        check_weights(run, epoch, i, st.loss_sum, data.x_train[idx], _kept(run, epoch))
        loss += st.loss_sum
        correct += st.correct
        seen += idx.size
        metrics.on_batch(st)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss / seen:.4f}", acc=f"{100 * correct / seen:.2f}%",
                            refresh=False)
    train_time = time.perf_counter() - t0
    metrics.after_training(run, seen)
    test_loss, test_acc = evaluate(run.learner, data.x_test, data.y_test,
                                   cfg.training.eval_batch_size, metrics.test_heads(),
                                   metrics.watch_test)
    if not np.isfinite(test_loss):
        bad = "holds NaN or inf values" if not np.isfinite(data.x_test).all() else \
            "gives non-finite states (settling diverged: lower the beta values)"
        raise DivergenceError(f"epoch {epoch}: the test-set loss is {test_loss}: the test set "
                              f"{bad}; {_kept(run, epoch)}")
    val_acc = None
    if data.x_val is not None:
        val_acc = evaluate(run.learner, data.x_val, data.y_val, cfg.training.eval_batch_size)[1]
    row = {"epoch": epoch, "train_loss": loss / seen, "train_acc": correct / seen,
           "test_loss": test_loss, "test_acc": test_acc, "val_acc": val_acc,
           "epoch_time_s": time.perf_counter() - t0, "samples_per_s": seen / train_time}
    metrics.after_evaluation(run, row)
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


def _first_epoch_traces_bytes(run: Run) -> int:
    """Before any epoch has run: the trace bytes of one recorded epoch, roughly (weights or
    conductances in float32 and pulse totals per device, plus per-batch statistics)."""
    if run.recorder is None:
        return 0
    return 64 * 1024 + 12 * sum(W.size for W in run.net.W.values())


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
    checkpoint of the last completed epoch stays in both cases.  The free space is checked
    before the first epoch too, so a nearly full disk costs no training."""
    d, rd = run.out_dir, run.dir
    if run.epochs_done < run.cfg.training.epochs:
        _check_space(run, run.epochs_done + 1, _first_epoch_traces_bytes(run))
    for epoch in range(run.epochs_done + 1, run.cfg.training.epochs + 1):
        row = train_epoch(run, epoch, progress)
        rec = run.recorder
        _check_space(run, epoch, rec.pending_bytes() if rec is not None else 0)
        run.history.append(row)
        old = (f"the checkpoint of epoch {epoch - 1} is kept: fix this and continue with "
               f"crossbar-ep run --resume {d}" if epoch > 1 else
               "no epoch was saved: fix this and start again")
        try:
            if rec is not None:   # traces first: if they fail, the last checkpoint stays
                rec.end_epoch(row)
            _write(os.path.join(d, CHECKPOINT), lambda: save_checkpoint(run), old)
        except BaseException:
            run.history.pop()     # the epoch is not saved: the run stays at the checkpoint
            raise
        new = (f"the checkpoint holds epoch {epoch}: fix this and continue with "
               f"crossbar-ep run --resume {d}")
        _write(os.path.join(d, "metrics.csv"), lambda: write_metrics(run), new)
        _write(os.path.join(d, "curves.png"), lambda: write_curves(run), new)
        if on_epoch is not None:
            on_epoch(row)
    if run.recorder is not None:
        run.recorder.finish()
    s = summary(run)
    _write(os.path.join(d, "summary.txt"), lambda: derived.write_summary(rd, s),
           "training finished and the checkpoint holds every epoch")
    return s


def summary(run: Run) -> dict:
    return derived.summary_of(run.cfg.name, run.cfg.training.algorithm, run.history,
                              run.out_dir)


def start(cfg: Config, out_dir: str | None = None, data: Dataset | None = None,
          overwrite: bool = False) -> Run:
    """A fresh, locked run directory with the resolved config written into it.

    Refuses a folder that is not empty unless it holds this same experiment stopped before
    its first checkpoint; ``overwrite`` deletes an earlier run's files there instead.  A
    config whose estimated peak memory exceeds what the machine has is refused before
    anything is created (:mod:`crossbar_ep.config.memory`); a run that fails to set up
    leaves no folder behind that it created."""
    from crossbar_ep.config.memory import check_memory
    out_dir = out_dir or default_run_dir(cfg)
    check_memory(cfg)
    rd = RunDir(out_dir)
    busy = os.path.isfile(rd.file(LOCK))
    lock = rd.lock() if busy else None   # in use by another process: say so first
    rd.check_out(cfg, overwrite)
    created = rd.make()
    try:
        lock = lock or rd.lock()
        rd.check_out(cfg, overwrite)   # again: another process may have written here
        if overwrite:
            rd.remove_run_files()
        rd.clean_temps()
        run = setup(cfg, out_dir, data)
    except BaseException:
        if created:
            _remove_new_folder(rd, lock)
        raise
    run.lock = lock
    run.run_id = new_run_id()
    rd.write_text("config.yaml", config_yaml(cfg))
    rd.write_identity(run.run_id, config_hash(hashed_config(cfg)))
    rd.write_text("graph.json", json.dumps(network_graph(run.net), indent=1))
    attach_recorder(run, None)
    return run


def _remove_new_folder(rd: RunDir, lock) -> None:
    """Undo :meth:`RunDir.make` after a failed start: the lock file goes, and the folder if
    nothing else is in it."""
    if lock is not None:
        lock.release()
    try:
        os.unlink(rd.file(LOCK))
        rd.clean_temps()
        os.rmdir(rd.path)
    except OSError:
        pass


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


def attach_recorder(run: Run, resume_epochs: int | None, new_traces: bool = False) -> None:
    """Open the run's trace file when ``traces.enabled`` (new, or trimmed to the checkpoint
    after checking that it is this run's; ``new_traces`` starts a new one on resume)."""
    if not run.cfg.traces.enabled:
        return
    from crossbar_ep.io.traces import Recorder
    identity = {"run_id": run.run_id, "config_sha256": config_hash(hashed_config(run.cfg))}
    run.recorder = Recorder(run.cfg.traces, run.out_dir, config_yaml(run.cfg), run.learner,
                            resume_epochs, run.cfg.settling.tau_s, identity=identity,
                            same_config=lambda text: _same_config(text, run.cfg),
                            new_file=new_traces)


def _same_config(text: str, cfg: Config) -> bool:
    """Does a trace file's ``config_yaml`` (a file written before run ids) describe ``cfg``?"""
    import yaml
    try:
        old = _with_defaults(yaml.safe_load(text))
    except (yaml.YAMLError, AttributeError, TypeError):
        return False
    return not config_changes(old, hashed_config(cfg))


def _with_defaults(stored: dict) -> dict:
    """A checkpoint's stored config resolved by this version: keys added since it was
    written take their defaults (which keep the behaviour they were added with), so they are
    not changes; a stored config this version cannot read is compared as it is."""
    try:
        return hashed_config(config_from_dict(stored, source="<checkpoint>"))
    except CrossbarEPError:
        return stored if isinstance(stored, dict) else {}


def _check_identity(rd: RunDir, cfg: Config, meta: dict, ident: dict | None,
                    accept_changes: bool) -> bool:
    """Is the checkpoint this run's, trained with this config.yaml?  Returns True when the
    config was edited since and ``accept_changes`` accepts it; raises otherwise."""
    ck, d = rd.file(CHECKPOINT), rd.path
    again = f"crossbar-ep run {cfg.source} --out {d} --overwrite"
    new = hashed_config(cfg)
    new_sha = config_hash(new)
    changes = []
    if "config_sha256" in meta and meta["config_sha256"] != new_sha:
        changes = config_changes(_with_defaults(meta.get("config", {})), new)
    ck_id = meta.get("run_id")
    if ident and isinstance(ck_id, str) and ck_id != ident["run_id"]:
        other = f", trained with another config ({changes_text(changes)})" if changes else ""
        raise CheckpointError(f"{ck}: belongs to another run (its run id {ck_id[:12]}, this "
                              f"folder's run.json: {ident['run_id'][:12]}{other}); it was "
                              f"copied in from another run folder.  Put this run's own "
                              f"checkpoint back, or start this run again from its config: "
                              f"{again}")
    if not changes:
        return False
    if ident and ident.get("config_sha256") == new_sha:
        raise CheckpointError(f"{ck}: was trained with another config than this run's "
                              f"config.yaml ({changes_text(changes)}); config.yaml is the one "
                              f"this run started with, so the checkpoint came from another "
                              f"run.  Put this run's own checkpoint back, or start this run "
                              f"again from its config: {again}")
    if not accept_changes:
        raise CheckpointError(f"{cfg.source}: edited since the checkpoint was written ("
                              f"{changes_text(changes)}); the checkpoint was trained with the "
                              f"old values.  Restore them, or continue with the new ones: "
                              f"crossbar-ep run --resume {d} --accept-config-changes")
    return True


def resume(out_dir: str, epochs: int | None = None, data: Dataset | None = None,
           record: bool = True, accept_changes: bool = False,
           expect: Config | None = None, new_traces: bool = False) -> Run:
    """Reopen a run directory at its last checkpoint.

    ``epochs`` sets ``training.epochs`` (validated; at least the epochs done; written to
    config.yaml only when it extends the run).  A config.yaml edited since the checkpoint was
    written is refused unless ``accept_changes``, and a checkpoint or trace file of another
    run always; ``expect`` (a config the caller is about to train) must match the run's
    config.  The whole checkpoint is read and checked before anything is written.  A resume
    removes leftover temporary files and rebuilds metrics, curves and summary when a kill
    left them behind the checkpoint.  ``new_traces`` starts a new trace file (the old one is
    kept, renamed).  ``record=False`` is for read-only use of the trained state: no lock, and
    nothing in the folder is touched."""
    rd = RunDir(out_dir)
    cfg = rd.config()
    writes = record or epochs is not None or accept_changes
    lock = rd.lock(resuming=True) if writes else None
    cfg_path = cfg.source
    meta, arrays = rd.read_checkpoint()
    check_finite(arrays, rd.file(CHECKPOINT))
    done = int(meta.get("epochs_done", 0))
    if expect is not None:
        changes = config_changes(hashed_config(cfg), hashed_config(expect))
        if changes:
            raise CheckpointError(f"{out_dir}: holds a run of another config ("
                                  f"{changes_text(changes)}); choose another output folder")
    ident = rd.identity()
    accepted = _check_identity(rd, cfg, meta, ident, accept_changes)
    if epochs is not None:
        from crossbar_ep.config.experiment import apply_overrides
        raw = apply_overrides(cfg.to_dict(), [f"training.epochs={epochs}"])
        extended = config_from_dict(raw, source=f"{cfg_path} (--epochs {epochs})")
        if epochs < done:
            raise ConfigError(f"{cfg_path} (--epochs {epochs}): training.epochs: the run has "
                              f"already trained {done} epochs; give --epochs {done + 1} or "
                              f"more to extend it")
        if epochs > done and epochs != cfg.training.epochs:
            rd.write_text("config.yaml", config_yaml(extended))
        cfg = replace(extended, source=cfg_path)   # epochs == done: nothing left to train
    run = setup(cfg, out_dir, data)
    run.lock = lock
    load_checkpoint(run, meta, arrays)
    run.run_id = (ident or {}).get("run_id") or meta.get("run_id") or new_run_id()
    if writes:
        sha = config_hash(hashed_config(cfg))
        if ident is None or ident.get("config_sha256") != sha:
            rd.write_identity(run.run_id, sha)
        if accepted or meta.get("run_id") != run.run_id:
            save_checkpoint(run)   # the checkpoint now records the accepted config, the id
        rd.clean_temps()
        derived.rebuild(rd, run.history, run.epochs_done >= cfg.training.epochs, cfg.name,
                        cfg.training.algorithm)
    if record and (run.epochs_done < cfg.training.epochs or _has_pending_traces(run)
                   or new_traces):
        attach_recorder(run, run.epochs_done, new_traces)   # also merges side files
    return run


def _has_pending_traces(run: Run) -> bool:
    if not run.cfg.traces.enabled:
        return False
    from crossbar_ep.io.traces import pending_paths
    return bool(pending_paths(os.path.join(run.out_dir, run.cfg.traces.file)))

"""The Python API: build, settle, train and fit an FRE-RNN from a notebook, without YAML.

    import crossbar_ep as cx
    net = cx.make_network([64, 32, 32, 2], beta_i=0.05, beta_f=0.5, lr=0.05)
    cx.attach_crossbar(net, "W1", "device_models/ideal.yaml")
    model = cx.ep_learner(net, T=20, K=10, optimizer="sgd")
    free = model.settle(x)                 # free phase: free.s[k] (B, n_k), free.p (B, n_out)
    nudged = model.settle(x, y, free)      # nudged phase from the free fixed point
    model.train_batch(x, y)                # one EP step (local updates, pulses on crossbars)
    history = cx.fit(model, x, y, epochs=3, validation=(x_val, y_val))

The CLI builds the same objects from a config (:mod:`crossbar_ep.model.learners`, :mod:`crossbar_ep.crossbar.pulses`).
"""

from __future__ import annotations

import csv
import os
import time

import numpy as np

from crossbar_ep.circuit.ir_drop import WireSettings
from crossbar_ep.circuit.iv import IVLaw
from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery
from crossbar_ep.crossbar.drift import DRIFT_COMPENSATION
from crossbar_ep.crossbar.pulses import DeterministicPulses
from crossbar_ep.devices.card import DeviceCard, load_card
from crossbar_ep.api_build import (  # noqa: F401  (the API's builders)
    bp_learner,
    ep_learner,
    from_experiment,
    make_conv_network,
    make_network,
    settler,
)
from crossbar_ep.api_checks import (  # noqa: F401
    check_batch_size,
    check_inputs,
    check_labels,
    check_section,
    options,
)
from crossbar_ep.errors import ConfigError, CrossbarEPError
from crossbar_ep.model.network import Network

__all__ = ["make_network", "make_conv_network", "from_experiment", "attach_crossbar",
           "settler", "options", "ep_learner", "bp_learner", "fit", "evaluate", "MetricsCSV",
           "SaveWeights", "Traces"]


def attach_crossbar(net: Network, name: str, card: DeviceCard | str, *,
                    periphery: Periphery | None = None, signed: str = "differential",
                    tile_rows: int = 256, tile_cols: int = 256,
                    weight_range_factor: float = 2.0, wires: WireSettings | None = None,
                    iv: IVLaw | None = None, rule=None, lr: float | None = None,
                    seed: int | np.random.Generator = 0,
                    drift_compensation: str = "none") -> CrossbarMatrix:
    """Put projection ``name`` (e.g. ``"W1"``) of ``net`` on a crossbar array.

    card: a :class:`DeviceCard` or the path of a card file; periphery: DAC/ADC/read noise
    (default ideal); signed: ``differential`` or ``reference``; rule: a pulse rule
    (:class:`DeterministicPulses` by default, or any rule of :mod:`crossbar_ep.crossbar.rules`:
    ``StochasticCoincidence``, ``MixedPrecision``, ``TikiTaka``; its per-array state is
    created here; TikiTaka built without ``transfer_columns`` reads one column per update,
    so pass the batch size for the papers' rate); lr: pulse
    gain (default the projection's learning rate); drift_compensation: ``none``,
    ``global`` or ``column`` (:mod:`crossbar_ep.crossbar.drift`).  The current weights are
    programmed through the device model.  A nonlinear ``iv`` law together with wire
    resistance raises :class:`~crossbar_ep.errors.CrossbarEPError`.  Returns the array (also
    ``net.ops[name]``).
    """
    if name not in {p.name for p in net.projections}:
        raise ConfigError(f"attach_crossbar: {name!r} is not a projection of this network; "
                          f"use one of {', '.join(p.name for p in net.projections)}")
    _check_array_args(periphery, wires, iv, signed, tile_rows, tile_cols,
                      weight_range_factor, lr)
    if isinstance(card, str):
        card = load_card(card)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    cb = CrossbarMatrix(net.W[name], card, rng, periphery or Periphery(), signed, tile_rows,
                        tile_cols, weight_range_factor, net.dtype, wires or WireSettings(),
                        iv or IVLaw())
    if drift_compensation not in DRIFT_COMPENSATION:
        raise CrossbarEPError(f"attach_crossbar: drift_compensation {drift_compensation!r}; "
                              f"use {', '.join(DRIFT_COMPENSATION)}")
    cb.drift_compensation = drift_compensation
    cb.rule = rule if rule is not None else DeterministicPulses()
    if hasattr(cb.rule, "attach"):     # per-array rule state (accumulators, fast arrays)
        cb.rule.attach(cb)
    cb.lr = net.lr[name] if lr is None else float(lr)
    net.attach(name, cb)
    return cb


def _check_array_args(periphery, wires, iv, signed, tile_rows, tile_cols, factor, lr):
    """attach_crossbar's arguments through the crossbar section's schema."""
    from crossbar_ep.config.experiment import CrossbarConfig
    from crossbar_ep.schema import Where, section_keys
    where = "attach_crossbar"
    for obj in (periphery, wires, iv):
        if obj is not None:
            check_section(obj, where)
    fields = {f.name: f for f in section_keys(CrossbarConfig)}
    for key, value in (("signed", signed), ("tile_rows", tile_rows),
                       ("tile_cols", tile_cols), ("weight_range_factor", factor)):
        fields[key].metadata["parse"](value, Where(where, key))
    if lr is not None:
        from crossbar_ep.schema import MAX_GAIN, p_float
        p_float(lo=0.0, hi=MAX_GAIN)(lr, Where(where, "lr"))


def evaluate(model, x: np.ndarray | None = None, y: np.ndarray | None = None,
             batch_size: int = 1000, **retention):
    """(mean cross-entropy, accuracy) of ``model.predict`` on (x (N, n_in), y (N,) integer
    labels), checked like :func:`fit`'s data.

    With a run directory instead of a model, the retention evaluation of
    ``crossbar-ep evaluate`` (:mod:`crossbar_ep.runs.retention`): keyword arguments
    ``times`` ("1s,1h,1d,1w,1mo,1y,10y"), ``card`` (None: an in-situ run's own arrays),
    ``overrides`` (``crossbar.*`` settings), ``repeats``, ``compensation`` (modes),
    ``faults`` ("stuck_off=F,stuck_on=F"), ``recover`` (batch counts), ``recover_at`` (time
    labels), ``samples``, ``out``, ``overwrite``, ``progress``; returns {"rows", "recovery",
    "table", "out_dir"}."""
    if isinstance(model, (str, os.PathLike)):
        return _evaluate_run(os.fspath(model), **retention)
    net = model.net
    x = check_inputs(x, net.sizes[0], net.dtype, "evaluate")
    y = check_labels(y, x.shape[0], net.sizes[-1], "evaluate")
    batch_size = check_batch_size(batch_size, "evaluate")
    loss = correct = 0.0
    for i in range(0, x.shape[0], batch_size):
        p = model.predict(x[i:i + batch_size])
        yy = y[i:i + batch_size]
        loss -= float(np.log(np.maximum(p[np.arange(yy.size), yy], 1e-12)).sum())
        correct += int((p.argmax(1) == yy).sum())
    n = max(1, x.shape[0])
    return loss / n, correct / n


def _evaluate_run(run_dir: str, times: str = "1s,1h,1d,1w,1mo,1y,10y", card=None,
                  overrides=(), repeats: int = 1, compensation=("none",), faults=None,
                  recover=(), recover_at=None, recover_modes=("none",), samples=None,
                  out=None, overwrite: bool = False, progress: bool = False) -> dict:
    from types import SimpleNamespace

    from crossbar_ep.cli_evaluate import plan_from_args
    from crossbar_ep.runs.retention_report import evaluate_run
    join = (lambda v: v if isinstance(v, str) else ",".join(str(a) for a in v))
    args = SimpleNamespace(times=times, card=card, overrides=list(overrides), repeats=repeats,
                           compensation=join(compensation), faults=faults,
                           recover=join(recover) if recover else None,
                           recover_at=join(recover_at) if recover_at else None,
                           recover_modes=join(recover_modes), samples=samples, seed_offset=0)
    return evaluate_run(run_dir, plan_from_args(args), out, progress=progress,
                        overwrite=overwrite)


class MetricsCSV:
    """Callback: append each epoch's row to a CSV file."""

    def __init__(self, path: str):
        self.path = path

    def on_epoch_end(self, model, row: dict) -> None:
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)


class SaveWeights:
    """Callback: save every operator's state and the biases to an ``.npz`` after each epoch."""

    def __init__(self, path: str):
        self.path = path

    def on_epoch_end(self, model, row: dict) -> None:
        net = model.net
        arrays = {f"{name}:{k}": np.asarray(v) for name, op in net.ops.items()
                  for k, v in op.state_dict().items()}
        arrays.update({f"b:{k}": v for k, v in net.b.items()})
        np.savez(self.path, **arrays)


class Traces:
    """Callback: HDF5 traces of the run in ``run_dir``/traces.h5, the same file and schema as
    a CLI run's (``docs/hdf5_schema.md``; read it with ``crossbar_ep.io.traces.open_run``).
    Keyword options are the ``traces`` config keys (``every``, ``batches``, ``samples``,
    ``conductances``, ``trajectories``, ``tiles``, ``pulses``...); ``tau_s`` converts settling
    time to seconds."""

    def __init__(self, run_dir: str, tau_s: float = 1e-7, **options):
        from crossbar_ep.config.experiment import TracesConfig
        self.run_dir, self.tau_s = run_dir, tau_s
        self.tcfg = TracesConfig(**{"enabled": True, **options})
        self.recorder = None

    def on_fit_begin(self, model) -> None:
        from crossbar_ep.io.traces import Recorder
        from crossbar_ep.runs.rundir import claim_for_api_traces
        self.lock = claim_for_api_traces(self.run_dir, self.tcfg.file)   # held while alive
        self.recorder = Recorder(self.tcfg, self.run_dir, "# built with the Python API\n",
                                 model, None, self.tau_s)

    def on_epoch_begin(self, model, epoch: int, n_batches: int) -> None:
        self.recorder.begin_epoch(epoch, n_batches)

    def on_batch_begin(self, model, index: int) -> None:
        self.recorder.begin_batch(index)

    def on_batch_end(self, model, index: int, stats) -> None:
        self.recorder.end_batch(stats)

    def on_epoch_end(self, model, row: dict) -> None:
        self.recorder.end_epoch(row)


def _hook(callbacks, name: str, *args) -> list:
    return [getattr(cb, name)(*args) for cb in callbacks if hasattr(cb, name)]


def fit(model, x: np.ndarray, y: np.ndarray, epochs: int = 1, batch_size: int = 100, *,
        validation: tuple | None = None, callbacks: list = (), seed: int = 0,
        progress: bool = False) -> list:
    """Train ``model`` (an EP or BP learner) for ``epochs`` passes over (x (N, n_in), y (N,)
    integer labels) in shuffled mini-batches; returns one dict per epoch (train loss and
    accuracy, validation accuracy, time).  Callbacks may define ``on_fit_begin(model)``,
    ``on_epoch_begin(model, epoch, n_batches)``, ``on_batch_begin(model, index)``,
    ``on_batch_end(model, index, stats)`` and ``on_epoch_end(model, row)``; one whose
    ``on_epoch_end`` returns True stops training."""
    net = model.net
    x = check_inputs(x, net.sizes[0], net.dtype, "fit")
    y = check_labels(y, x.shape[0], net.sizes[-1], "fit")
    batch_size = check_batch_size(batch_size, "fit")
    from crossbar_ep.schema import MAX_STEPS, Where, p_int
    epochs = p_int(lo=1, hi=MAX_STEPS)(epochs, Where("fit", "epochs"))
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ConfigError("fit: validation: give (x_val, y_val)")
        xv = check_inputs(validation[0], net.sizes[0], net.dtype, "fit: validation")
        validation = (xv, check_labels(validation[1], xv.shape[0], net.sizes[-1],
                                       "fit: validation"))
    rng = np.random.default_rng(seed)
    history = []
    _hook(callbacks, "on_fit_begin", model)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        perm = rng.permutation(x.shape[0])
        loss = correct = 0.0
        starts = range(0, x.shape[0], batch_size)
        _hook(callbacks, "on_epoch_begin", model, epoch, len(starts))
        training = getattr(model, "training", None)
        if training is not None:        # training.lr_schedule, as a CLI run applies it
            from crossbar_ep.config.build import set_epoch_rates
            set_epoch_rates(net, model.opt, training, epoch)
        batches = starts
        if progress:
            from tqdm import tqdm
            batches = tqdm(starts, desc=f"epoch {epoch}/{epochs}", unit="batch")
        for n, i in enumerate(batches):
            idx = perm[i:i + batch_size]
            _hook(callbacks, "on_batch_begin", model, n)
            st = model.train_batch(x[idx], y[idx])
            if not np.isfinite(st.loss_sum):
                raise CrossbarEPError(
                    f"fit: the loss became {st.loss_sum} at epoch {epoch}, batch {n + 1}: "
                    f"training diverged; lower the learning rate (or the pulse gain of the "
                    f"arrays)")
            _hook(callbacks, "on_batch_end", model, n, st)
            loss += st.loss_sum
            correct += st.correct
        row = {"epoch": epoch, "train_loss": loss / x.shape[0],
               "train_acc": correct / x.shape[0], "time_s": time.perf_counter() - t0}
        if validation is not None:
            xv, yv = validation
            row["val_loss"], row["val_acc"] = evaluate(model, xv, yv)
        history.append(row)
        if any(_hook(callbacks, "on_epoch_end", model, row)):
            break
    return history

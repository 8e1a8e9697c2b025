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
from crossbar_ep.crossbar.energy import EnergyMeter
from crossbar_ep.crossbar.pulses import DeterministicPulses, PulseStats
from crossbar_ep.devices.card import DeviceCard, load_card
from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.model.convergence import PhaseStop
from crossbar_ep.model.normalisation import path_gains
from crossbar_ep.model.learners import BPLearner, EPLearner
from crossbar_ep.model.network import Network
from crossbar_ep.model.optim import SGD, Adam
from crossbar_ep.model.settle import Settler

__all__ = ["attach_crossbar", "ep_learner", "bp_learner", "fit", "evaluate", "MetricsCSV",
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
        raise KeyError(f"{name!r}: not a projection of this network "
                       f"({', '.join(p.name for p in net.projections)})")
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


def _optimizer(net: Network, optimizer, lr):
    if lr is not None:
        for key in net.lr:
            net.lr[key] = float(lr)
    if not isinstance(optimizer, str):
        return optimizer
    if optimizer == "adam":
        return Adam(net.trainable(), net.lr)
    if optimizer == "sgd":
        return SGD(net.trainable(), net.lr)
    raise ValueError(f"optimizer {optimizer!r}: use 'adam', 'sgd' or an optimiser object")


def ep_learner(net: Network, T: int = 20, K: int = 10, *, optimizer="adam",
               lr: float | None = None, normalised: bool = False, mode: str = "discrete",
               dt_over_tau: float = 1.0, method: str = "euler",
               nudge_error: str = "recomputed", early_stop: bool = False,
               tolerance: float = 1e-3, tolerance_mode: str = "absolute",
               readout_error: str = "free") -> EPLearner:
    """An EP learner over ``net``: free phase T and nudged phase K (steps of the discrete map,
    or units of tau with ``mode="ode"``); ``optimizer`` is ``"adam"``, ``"sgd"`` or an object
    from :mod:`crossbar_ep.model.optim`; ``lr`` sets every learning rate (else ``net.lr``).
    Crossbar arrays in ``net`` are observed for pulse statistics (``learner.pulses``) and
    read energy (``learner.settler.meter``).  ``early_stop`` ends a phase once it has
    settled to ``tolerance`` (``tolerance_mode``: :mod:`crossbar_ep.model.convergence`)."""
    opt = _optimizer(net, optimizer, lr)
    arrays = {n: op for n, op in net.ops.items() if isinstance(op, CrossbarMatrix)}
    pulses = meter = None
    if arrays:
        pulses, meter = PulseStats(arrays, next(iter(arrays.values())).rng), EnergyMeter()
        for cb in arrays.values():
            cb.observers += [pulses, meter]
    settler = Settler(net, T, K, mode, dt_over_tau, early_stop, tolerance, None, nudge_error,
                      None, method, meter=meter)
    settler.stop = PhaseStop(tolerance, tolerance_mode, net.L, path_gains(net))
    return EPLearner(net, settler, opt, normalised=normalised, pulses=pulses,
                     readout_error=readout_error)


def bp_learner(net: Network, *, optimizer="adam", lr: float | None = None) -> BPLearner:
    """The backpropagation twin of ``net`` (the feed-forward net it tends to as beta_i -> 0)."""
    return BPLearner(net, _optimizer(net, optimizer, lr))


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> tuple:
    """(mean cross-entropy, accuracy) of ``model.predict`` on (x, y)."""
    loss = correct = 0.0
    for i in range(0, x.shape[0], batch_size):
        p = model.predict(x[i:i + batch_size])
        yy = y[i:i + batch_size]
        loss -= float(np.log(np.maximum(p[np.arange(yy.size), yy], 1e-12)).sum())
        correct += int((p.argmax(1) == yy).sum())
    n = max(1, x.shape[0])
    return loss / n, correct / n


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
    x = np.ascontiguousarray(x, dtype=model.net.dtype)
    y = np.asarray(y)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (samples, features) and y (samples,); got {x.shape}, "
                         f"{y.shape}")
    rng = np.random.default_rng(seed)
    history = []
    _hook(callbacks, "on_fit_begin", model)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        perm = rng.permutation(x.shape[0])
        loss = correct = 0.0
        starts = range(0, x.shape[0], batch_size)
        _hook(callbacks, "on_epoch_begin", model, epoch, len(starts))
        batches = starts
        if progress:
            from tqdm import tqdm
            batches = tqdm(starts, desc=f"epoch {epoch}/{epochs}", unit="batch")
        for n, i in enumerate(batches):
            idx = perm[i:i + batch_size]
            _hook(callbacks, "on_batch_begin", model, n)
            st = model.train_batch(x[idx], y[idx])
            _hook(callbacks, "on_batch_end", model, n, st)
            loss += st.loss_sum
            correct += st.correct
        row = {"epoch": epoch, "train_loss": loss / x.shape[0],
               "train_acc": correct / x.shape[0], "time_s": time.perf_counter() - t0}
        if validation is not None:
            xv, yv = validation
            row["val_loss"], row["val_acc"] = evaluate(
                model, np.ascontiguousarray(xv, dtype=model.net.dtype), np.asarray(yv))
        history.append(row)
        if any(_hook(callbacks, "on_epoch_end", model, row)):
            break
    return history

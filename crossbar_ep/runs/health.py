"""Is a run still learning?  Divergence and collapse, with the likely cause read from the
evidence (docs/limits.md, "Divergence and collapse").

*Divergence* (a non-finite loss, or a weight beyond ``MAX_ABS_WEIGHT``) stops a run.  Its
cause is taken from where it happened: a crossbar array whose weights left the range its
devices can hold was driven there by its device model (the card); a digital matrix by its
learning rate or the nudge strengths.

*Collapse* does not stop a run: test accuracy at chance with outputs that no longer depend on
the input (one class predicted for nearly every sample, or the same output for every
sample), or a loss stuck at ln(classes), for two epochs in a row (or at the run's last
epoch).  Each such epoch gets a ``collapse`` entry in its metrics row and a warning in the
log, with the likely cause: devices pinned at their bounds,
weights grown far beyond their initial scale (the learning rate), or no EP signal reaching
the layers (the nudge).  Only values the epoch computed anyway are read, so the check changes
no result.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from crossbar_ep.errors import CrossbarEPError

MAX_ABS_WEIGHT = 1e6          # |w| or |b| above this (or NaN/inf) stops a run as diverged
CONSTANT_STD = 1e-4           # outputs whose spread over samples is below this are constant
ONE_CLASS_SHARE = 0.99        # ... or that pick one class for this share of the samples
LOSS_AT_LN_C = 0.01           # |loss - ln C| below this fraction of ln C: a flat output
AT_BOUND = 0.5                # mean fraction of devices at a bound that pins an array
WEIGHT_GROWTH = 30.0          # max |w| this many times its initial value: runaway weights
NO_SIGNAL = 1e-7              # mean |s_nudged - s_free| below this: the nudge reaches nothing


class DivergenceError(CrossbarEPError):
    """Training produced non-finite or exploding values; the last checkpoint is kept."""


def _card_text(cb) -> str:
    card = cb.card
    big = sorted(((k, v) for k, v in card.params.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)),
                 key=lambda kv: -abs(kv[1]))[:3]
    shown = ", ".join(f"{k} = {v:g}" for k, v in big)
    return (f"likely cause: the device card {card.path} ({card.model}): its update moved "
            f"the devices beyond the range they can hold; check its step and noise "
            f"parameters (largest: {shown})")


def divergence_cause(run, name: str | None) -> str:
    """The likely cause of a divergence first seen in matrix ``name`` (None: the loss)."""
    pulses = run.learner.pulses
    crossbars = pulses.crossbars if pulses is not None else {}
    if name in crossbars:
        cb = crossbars[name]
        W = cb.dense()
        if not np.isfinite(W).all() or float(np.abs(W).max()) > 1.01 * cb.scale:
            return _card_text(cb)
    if name is None:
        for cb in crossbars.values():
            W = cb.dense()
            if not np.isfinite(W).all():
                return _card_text(cb)
    t, m = run.cfg.training, run.cfg.model
    return (f"likely cause: the learning rate (training.lr = {t.lr}) or the nudge strengths "
            f"(training.beta_f = {t.beta_f}, model.beta_i = {m.beta_i}) are too large")


def check_finite(run, epoch: int, batch: int, loss: float, x: np.ndarray, kept: str) -> None:
    """Stop with :class:`DivergenceError` on a non-finite loss or a weight or bias that is
    NaN/inf or above ``MAX_ABS_WEIGHT`` in magnitude (two reductions per matrix per batch)."""
    where = f"training diverged at epoch {epoch}, batch {batch}"
    for name, w in run.net.trainable():
        big = max(float(w.max()), -float(w.min())) if w.size else 0.0
        if not big <= MAX_ABS_WEIGHT:      # also catches NaN
            lr = (run.learner.opt.lrs if run.learner.opt is not None else run.net.lr).get(name)
            lr = f" (learning rate {lr:g})" if lr is not None else ""
            raise DivergenceError(f"{where}: {name}{lr} reached max |w| = {big:.3g} (limit "
                                  f"{MAX_ABS_WEIGHT:g}); {divergence_cause(run, name)}; {kept}")
    if not np.isfinite(loss):
        if not np.isfinite(x).all():
            raise DivergenceError(f"{where}: the input batch holds NaN or inf values: the "
                                  f"data set is corrupt; {kept}")
        raise DivergenceError(f"{where}: the loss is {loss} (non-finite states after "
                              f"settling); {divergence_cause(run, None)}; {kept}")


class CollapseCheck:
    """Metrics observer: adds ``collapse`` (the warning text) to a row whose epoch has
    collapsed and prints it (see the module text)."""

    def __init__(self, spread, log=None):
        self.spread = spread
        self.log = log or (lambda m: print(m, file=sys.stderr))
        self.w0 = None
        self.since = None        # first epoch of the current run of collapsed epochs

    def begin_epoch(self, run) -> None:
        if self.w0 is None:
            self.w0 = {n: float(np.abs(w).max()) for n, w in run.net.trainable()
                       if w.ndim == 2 and w.size}
        self.spread.begin_epoch(run)

    def watch_test(self, p: np.ndarray, y: np.ndarray) -> None:
        self.spread.watch_test(p, y)

    def after_evaluation(self, run, row: dict) -> dict:
        """A slow start looks like a collapse for an epoch: an epoch is reported once the
        evidence held for two epochs in a row, or at the run's last epoch."""
        text = collapse_text(run, row, self.spread.evidence(), self.w0 or {})
        epoch = row["epoch"]
        if text is None:
            self.since = None
            return {}
        if self.since is None:
            self.since = epoch
        if epoch == self.since and epoch < run.cfg.training.epochs:
            return {}
        text = text.replace("training has collapsed:", f"training has collapsed (since epoch "
                                                       f"{self.since}):", 1)
        self.log(f"warning: {run.out_dir}: epoch {epoch}: {text}")
        return {"collapse": text}


def collapse_text(run, row: dict, spread: dict, w0: dict) -> str | None:
    """The collapse warning for an epoch's row, or None if the run is still learning."""
    c = run.data.n_classes
    n = max(1, run.data.x_test.shape[0])
    chance = 1.0 / c
    acc = row.get("test_acc")
    if acc is None or acc > chance + max(0.02, 2 * math.sqrt(chance * (1 - chance) / n)):
        return None
    ln_c = math.log(c)
    evidence = []
    if spread.get("output_std", 1.0) < CONSTANT_STD:
        evidence.append(f"the output is the same for every test sample (spread "
                        f"{spread['output_std']:.1e})")
    elif spread.get("top_class_share", 0.0) >= ONE_CLASS_SHARE:
        evidence.append(f"one class is predicted for {100 * spread['top_class_share']:.1f} % "
                        f"of the test samples")
    loss = row.get("train_loss")
    if loss is not None and abs(loss - ln_c) < LOSS_AT_LN_C * ln_c:
        evidence.append(f"the training loss {loss:.4f} is stuck at ln({c}) = {ln_c:.4f}")
    if not evidence:
        return None
    return (f"training has collapsed: test accuracy {100 * acc:.2f} % is chance (1/{c}) and "
            f"{'; '.join(evidence)}; {collapse_cause(run, row, w0)}")


def collapse_cause(run, row: dict, w0: dict) -> str:
    """The likely cause of a collapse, from the epoch's evidence."""
    t, m = run.cfg.training, run.cfg.model
    causes = []
    at_bound = row.get("at_bound_mean")
    if at_bound is not None and at_bound >= AT_BOUND:
        card = run.cfg.crossbar.device
        causes.append(f"the devices sit at their conductance bounds (at_bound_mean "
                      f"{at_bound:.2f}): the pulse gain (crossbar.update) or the device card "
                      f"{card} saturates them")
    growth = []
    for name, w in run.net.trainable():
        if name in w0 and w0[name] > 0:
            g = float(np.abs(w).max()) / w0[name]
            if g >= WEIGHT_GROWTH:
                growth.append((g, name))
    if growth:
        g, name = max(growth)
        causes.append(f"the weights grew {g:.0f}x beyond their initial scale ({name}): the "
                      f"learning rate (training.lr = {t.lr}, {t.optimizer}) is too large")
    ds = [v for k, v in row.items() if k.startswith("ds_L") and isinstance(v, (int, float))]
    if ds and max(ds) < NO_SIGNAL:
        causes.append(f"the nudge reaches no hidden layer (largest mean |s_nudged - s_free| "
                      f"{max(ds):.1e}): raise training.beta_f or model.beta_i")
    if not causes:
        causes.append(f"check the learning rate (training.lr = {t.lr}), the device card and "
                      f"the nudge (training.beta_f = {t.beta_f}, model.beta_i = {m.beta_i})")
    return "likely cause: " + "; or ".join(causes)

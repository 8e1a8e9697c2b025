"""The per-epoch metrics row, gathered by observers (docs/runs.md, "Metrics per epoch").

The epoch loop trains and evaluates; what a row holds beyond loss and accuracy comes from
observers, each adding its own keys: settling statistics, energy, the layer signals, the
auxiliary heads' accuracies, IR drop and pulse counts, and the collapse check.  An observer
defines any of the hooks below; :func:`observers_for` picks those a run needs.

Hooks, in the order the loop calls them:

- ``begin_epoch(run)``: before the first batch;
- ``on_batch(stats)``: after every batch (a :class:`~crossbar_ep.model.learners.BatchStats`);
- ``after_training(run, seen) -> dict``: after the last batch, before evaluation;
- ``test_heads() -> dict | None``: head index -> 0, filled by the test evaluation;
- ``watch_test(p, y)``: every test batch's prediction ``p`` (samples, classes) and labels;
- ``after_evaluation(run, row) -> dict``: after evaluation, with the row so far.
"""

from __future__ import annotations

import math

import numpy as np

from crossbar_ep.runs import aux


class SettleStats:
    """``settle_residual``, ``settle_steps``; for EP also the settling time in seconds
    (``settle_time_free_s``, ``settle_time_nudged_s``: tau_s x integrated tau)."""

    def __init__(self, ep: bool, tau_s: float):
        self.ep, self.tau_s = ep, tau_s

    def begin_epoch(self, run) -> None:
        self.resid, self.steps, self.t_free, self.t_nudged = [], [], [], []

    def on_batch(self, st) -> None:
        self.resid.append(st.residual)
        self.steps.append(st.steps)
        self.t_free.append(st.free_time_tau)
        self.t_nudged.append(st.nudged_time_tau)

    def after_training(self, run, seen: int) -> dict:
        row = {"settle_residual": float(np.mean(self.resid)),
               "settle_steps": float(np.mean(self.steps))}
        if self.ep:
            row["settle_time_free_s"] = self.tau_s * float(np.mean(self.t_free))
            row["settle_time_nudged_s"] = self.tau_s * float(np.mean(self.t_nudged))
        return row


class Energy:
    """Per-sample energy of the training reads, conversions and programming pulses
    (``energy_*_J``); evaluation reads are not counted."""

    def __init__(self, meter, pulses, periphery):
        self.meter, self.pulses, self.per = meter, pulses, periphery

    def begin_epoch(self, run) -> None:
        self.meter.reset()

    def after_training(self, run, seen: int) -> dict:
        p = self.pulses
        program = sum(s.get("program_J", 0.0) for s in p.stats.values()) if p else 0.0
        return self.meter.take(seen, self.per.e_dac_J, self.per.e_adc_J, program)

    def after_evaluation(self, run, row: dict) -> dict:
        self.meter.reset()          # evaluation reads are not training energy
        return {}


class LayerSignals:
    """``ds_L<k>`` and ``dw_<name>`` of EP runs (:func:`crossbar_ep.runs.aux.epoch_metrics`)."""

    def after_evaluation(self, run, row: dict) -> dict:
        return aux.epoch_metrics(run)


class HeadAccuracy:
    """``head_acc_<name>``: each auxiliary head's test accuracy, from the test evaluation's
    own free phases."""

    def __init__(self, names: dict):
        self.names = names

    def test_heads(self) -> dict:
        self.ok = dict.fromkeys(self.names, 0)
        return self.ok

    def after_evaluation(self, run, row: dict) -> dict:
        n = max(1, run.data.x_test.shape[0])
        return {f"head_acc_{self.names[e]}": c / n for e, c in self.ok.items()}


class IRDrop:
    """``ir_drop_rel``: ||W_read - W_programmed|| / ||W_programmed|| over the forward reads
    of every array (only with wire resistances)."""

    def __init__(self, crossbars: dict):
        self.crossbars = crossbars

    def after_evaluation(self, run, row: dict) -> dict:
        dev = [cb.ir_drop_deviation() for cb in self.crossbars.values()]
        return {"ir_drop_rel": float(np.sqrt(sum(d for d, _ in dev) /
                                             max(sum(w for _, w in dev), 1e-300)))}


class Pulses:
    """``pulses_total``, ``at_bound_mean``, the Tiki-Taka and drift-calibration totals and
    the per-array ``crossbar`` statistics of the epoch."""

    COUNTS = ("fast_pulses", "transfer_reads", "transfer_pulses",   # Tiki-Taka rules
              "calibration_reads")                                 # drift compensation

    def __init__(self, pulses):
        self.pulses = pulses

    def after_evaluation(self, run, row: dict) -> dict:
        xb = self.pulses.take_stats()
        if not xb:
            return {}
        out = {"pulses_total": int(sum(v["pulses"] for v in xb.values())),
               "at_bound_mean": float(np.mean([v["at_bound"] for v in xb.values()]))}
        for k in self.COUNTS:
            if any(k in v for v in xb.values()):
                out[f"{k}_total"] = int(sum(v.get(k, 0) for v in xb.values()))
        out["crossbar"] = xb
        return out


class OutputSpread:
    """What the test predictions look like, for the collapse check (no key of its own):
    the largest share of one predicted class and the spread of the outputs over samples."""

    def begin_epoch(self, run) -> None:
        self.counts, self.n, self.s1, self.s2 = None, 0, None, None

    def watch_test(self, p: np.ndarray, y: np.ndarray) -> None:
        k = p.shape[1]
        c = np.bincount(p.argmax(1), minlength=k)
        self.counts = c if self.counts is None else self.counts + c
        p = p.astype(float)
        s1, s2 = p.sum(0), (p * p).sum(0)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += p.shape[0]

    def evidence(self) -> dict:
        if not self.n:
            return {}
        mean = self.s1 / self.n
        var = np.maximum(self.s2 / self.n - mean * mean, 0.0)
        return {"top_class_share": float(self.counts.max() / self.n),
                "output_std": float(math.sqrt(float(var.max())))}


def observers_for(run) -> list:
    """The observers a run's config needs, in the order their keys appear in the row."""
    cfg, learner = run.cfg, run.learner
    ep = cfg.training.algorithm == "ep"
    obs = [SettleStats(ep, cfg.settling.tau_s)]
    settler = learner.settler
    meter = settler.meter if settler is not None else None
    pulses = learner.pulses
    if meter is not None:
        obs.append(Energy(meter, pulses, cfg.crossbar.periphery))
    obs.append(LayerSignals())
    names = aux.head_names(run) if ep else {}
    if names:
        obs.append(HeadAccuracy(names))
    w = cfg.crossbar.wires
    if pulses is not None and not w.r_wire_row_ohm == w.r_wire_col_ohm == w.r_driver_ohm == \
            w.r_sense_ohm == 0.0:
        obs.append(IRDrop(pulses.crossbars))
    if pulses is not None:
        obs.append(Pulses(pulses))
    from crossbar_ep.runs.health import CollapseCheck
    obs.append(CollapseCheck(OutputSpread()))
    return obs


class EpochMetrics:
    """Calls the observers' hooks and merges their keys into the epoch's row."""

    def __init__(self, observers: list):
        self.observers = observers

    def _each(self, hook: str):
        for o in self.observers:
            fn = getattr(o, hook, None)
            if fn is not None:
                yield fn

    def begin_epoch(self, run) -> None:
        for fn in self._each("begin_epoch"):
            fn(run)

    def on_batch(self, stats) -> None:
        for fn in self._each("on_batch"):
            fn(stats)

    def after_training(self, run, seen: int) -> None:
        self.pre = [getattr(o, "after_training", lambda r, s: {})(run, seen)
                    for o in self.observers]

    def test_heads(self) -> dict | None:
        heads = {}
        for fn in self._each("test_heads"):
            heads.update(fn())
        return heads or None

    def watch_test(self, p: np.ndarray, y: np.ndarray) -> None:
        for fn in self._each("watch_test"):
            fn(p, y)

    def after_evaluation(self, run, row: dict) -> dict:
        """``row`` with every observer's keys added (training-time keys first per observer)."""
        for o, pre in zip(self.observers, self.pre):
            row.update(pre)
            fn = getattr(o, "after_evaluation", None)
            if fn is not None:
                row.update(fn(run, row))
        return row

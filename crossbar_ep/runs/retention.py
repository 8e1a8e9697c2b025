"""Retention and recovery of a trained network on crossbar arrays (``crossbar-ep evaluate``).

A run's trained network (digital EP, the BP twin or an in-situ run) is programmed onto arrays
of a chosen card and periphery, or an in-situ run keeps its own arrays; then at each time after
programming the devices' clocks move there (the card's drift, its time-dependent read noise)
and the whole test set settles through the free phase (same T or stop rule as training).
Each repeat draws programming noise, drift exponents, faults and read noise from its own seed
(``crossbar.seed + repeat``), so a table of mean +- sd over repeats is reproducible; each
drift-compensation mode programs the same devices again (same seed) and differs only in the
digital gain its calibration reads set (:mod:`crossbar_ep.crossbar.drift`).

Recovery (``recover``): at the chosen times, three remedies from the drifted arrays: nothing;
reprogramming the stored digital weights (new programming noise, the clock restarts, stuck
devices stay stuck); and in-situ EP training on the drifted arrays with the recipe's pulse rule,
accuracy after each number of recovery batches, with its pulses and programming energy.

Units: times in seconds after programming; conductances in S; energies in J.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace

import numpy as np

from crossbar_ep.errors import ConfigError

TIME_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
              "mo": 2629800.0, "y": 31557600.0}   # mo: 1/12 of a Julian year
REMEDIES = ("nothing", "reprogram", "in_situ")


def parse_times(text: str) -> tuple:
    """``"1s,1h,1d,1w,1mo,1y,10y"`` -> ((label, seconds), ...), ascending; units s, min, h, d,
    w, mo (30.44 d), y (365.25 d); a bare number is seconds."""
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        m = re.fullmatch(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(s|min|h|d|w|mo|y)?", part)
        if not m:
            raise ConfigError(f"--times {text!r}: {part!r} is not a time; give numbers with "
                              f"units s, min, h, d, w, mo, y, e.g. 1s,1h,1d,1mo,1y")
        out.append((part, float(m[1]) * TIME_UNITS[m[2] or "s"]))
    if not out:
        raise ConfigError("--times: give at least one time, e.g. 1s,1h,1y")
    secs = [s for _, s in out]
    if secs != sorted(secs) or len(set(secs)) != len(secs):
        raise ConfigError(f"--times {text!r}: list the times once each, ascending (the clock "
                          f"only moves forward)")
    return tuple(out)


def parse_faults(text: str | None) -> tuple:
    """``"stuck_off=0.01,stuck_on=0.01"`` -> (stuck_off, stuck_on) fractions."""
    if not text:
        return (0.0, 0.0)
    got = {"stuck_off": 0.0, "stuck_on": 0.0}
    for part in str(text).split(","):
        key, _, value = part.partition("=")
        if key.strip() not in got:
            raise ConfigError(f"--faults {text!r}: keys are stuck_off (at G_min) and stuck_on "
                              f"(at G_max), e.g. stuck_off=0.01,stuck_on=0.01")
        try:
            got[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--faults {text!r}: {key.strip()} needs a fraction, got "
                              f"{value!r}") from None
    if not all(0.0 <= v <= 1.0 for v in got.values()) or sum(got.values()) > 1.0:
        raise ConfigError(f"--faults {text!r}: fractions in [0, 1], adding up to at most 1")
    return (got["stuck_off"], got["stuck_on"])


@dataclass(frozen=True)
class RetentionPlan:
    """What ``evaluate`` measures.  ``card``: a card to program the trained weights onto
    (None: an in-situ run's own arrays, or the run's card); ``overrides``: ``crossbar.*``
    settings (``"crossbar.periphery.read_noise=0.01"``); ``compensation``: drift-compensation
    modes compared; ``faults``: (stuck_off, stuck_on) fractions failing after programming;
    ``recover``: recovery batch counts (ascending; empty: no recovery) run at the times
    ``recover_at`` (labels of ``times``) for the modes ``recover_modes``."""

    times: tuple = (("1s", 1.0),)
    repeats: int = 1
    compensation: tuple = ("none",)
    card: str | None = None
    overrides: tuple = ()
    faults: tuple = (0.0, 0.0)
    samples: int | None = None
    seed_offset: int = 0
    recover: tuple = ()
    recover_at: tuple = ()
    recover_modes: tuple = ("none",)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["times"] = [list(t) for t in self.times]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass
class Unit:
    """The results of one (mode, repeat): rows per time, recovery rows, per-array stats."""

    mode: str
    repeat: int
    rows: list = field(default_factory=list)
    recovery: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)     # time label -> array -> {stat: value}


class Evaluator:
    """One run's trained network and the arrays it is evaluated on (see the module doc)."""

    def __init__(self, run, plan: RetentionPlan):
        from crossbar_ep.crossbar.array import CrossbarMatrix
        self.run, self.plan = run, plan
        self.cfg = run.cfg
        net = run.net
        self.targets = {p.name: np.array(net.W[p.name], dtype=float)
                        for p in net.projections}
        self.biases = {k: v.copy() for k, v in net.b.items()}
        self.own = not plan.card and not plan.overrides and any(
            isinstance(op, CrossbarMatrix) for op in net.ops.values())
        self.eval_cfg = self._eval_config()
        data = run.data
        n = data.x_test.shape[0] if plan.samples is None else min(plan.samples,
                                                                   data.x_test.shape[0])
        self.x, self.y = data.x_test[:n], data.y_test[:n]

    def _eval_config(self):
        from crossbar_ep.config.experiment import apply_overrides, config_from_dict
        cfg = self.cfg
        if self.own:
            return cfg
        raw = cfg.to_dict()
        raw["traces"] = {"enabled": False}
        xb = raw.setdefault("crossbar", {})
        xb["enabled"] = True
        if self.plan.card:
            xb["device"] = self.plan.card
        elif not cfg.crossbar.enabled:
            raise ConfigError(f"{cfg.source}: the run is digital; give the card to program its "
                              f"weights onto: --card NAME_OR_FILE (e.g. --card "
                              f"pcm_joshi2020_inference)")
        for o in self.plan.overrides:
            if not o.startswith("crossbar."):
                raise ConfigError(f"--set {o}: evaluate takes crossbar.* settings only (the "
                                  f"trained network and its settling stay the run's)")
        raw = apply_overrides(raw, list(self.plan.overrides), check_keys=True)
        return config_from_dict(raw, f"{cfg.source} (evaluate)")

    # ---------------------------------------------------------------- one (mode, repeat)
    def learner(self, mode: str, repeat: int):
        """A learner whose arrays hold the trained weights, programmed with repeat's seed
        (or a copy of the run's own arrays) under drift compensation ``mode``."""
        from crossbar_ep.config.build import build_network, make_learner, make_optimizer
        cfg = self.eval_cfg
        seed = cfg.crossbar.seed + self.plan.seed_offset + repeat
        if self.own:
            net = copy.deepcopy(self.run.net)
            for cb in self._arrays(net).values():
                for _, arr in cb.device_arrays():
                    arr.rng = np.random.default_rng([seed, id(arr) % 997])
                cb.drift_compensation = mode
            cfg = replace(cfg, crossbar=replace(cfg.crossbar, drift_compensation=mode))
            opt = make_optimizer(cfg.training, net.trainable(), net.lr)
            return _relearner(cfg, net, opt), net
        cfg = replace(cfg, crossbar=replace(cfg.crossbar, seed=seed, drift_compensation=mode))
        net = build_network(cfg, self.run.net.sizes[0], self.run.net.sizes[-1],
                            np.random.default_rng(0))
        for name, W in self.targets.items():
            net.ops[name].load_state_dict({"W": W.astype(net.dtype)})
        for k, b in self.biases.items():
            np.copyto(net.b[k], b)
        opt = make_optimizer(cfg.training, net.trainable(), net.lr)
        return make_learner(cfg, net, opt), net

    @staticmethod
    def _arrays(net) -> dict:
        from crossbar_ep.crossbar.array import CrossbarMatrix
        return {n: op for n, op in net.ops.items() if isinstance(op, CrossbarMatrix)}

    def faults(self, net, repeat: int) -> int:
        off, on = self.plan.faults
        if not (off or on):
            return 0
        rng = np.random.default_rng([self.eval_cfg.crossbar.seed, 7919, repeat])
        failed = 0
        for cb in self._arrays(net).values():
            for _, arr in cb.device_arrays():
                failed += arr.fail(off, on, rng)
            cb.refresh()
        return failed

    def accuracy(self, learner) -> tuple[float, float]:
        from crossbar_ep.runs.train import evaluate
        return evaluate(learner, self.x, self.y, self.cfg.training.eval_batch_size)

    def array_stats(self, net) -> dict:
        """Per array: conductance mean / std / 1, 50, 99 % quantiles per side (S), and the
        weights' relative error ||W_read - W_target|| / ||W_target|| at the present clock."""
        out = {}
        for name, cb in self._arrays(net).items():
            s = {}
            for side, g in zip(("pos", "neg"), cb.conductances()):
                if g is None:
                    continue
                q = np.quantile(g, (0.01, 0.5, 0.99))
                s.update({f"g_{side}_mean_S": float(g.mean()), f"g_{side}_std_S": float(g.std()),
                          f"g_{side}_q01_S": float(q[0]), f"g_{side}_q50_S": float(q[1]),
                          f"g_{side}_q99_S": float(q[2])})
            W = np.asarray(cb.dense(), float)
            ref = self.targets[name]
            s["w_rel_err"] = float(np.linalg.norm(W - ref) / max(np.linalg.norm(ref), 1e-300))
            out[name] = s
        return out

    def unit(self, mode: str, repeat: int, progress=None) -> Unit:
        """Program (or copy) the arrays, apply the faults, then evaluate at every time (and
        run the recoveries asked for)."""
        learner, net = self.learner(mode, repeat)
        arrays = self._arrays(net)
        t_start = {n: cb.age for n, cb in arrays.items()}
        u = Unit(mode, repeat)
        failed = self.faults(net, repeat)
        for label, t in self.plan.times:
            for name, cb in arrays.items():
                cb.advance_to(t_start[name] + t)
            loss, acc = self.accuracy(learner)
            u.stats[label] = self.array_stats(net)
            errs = [s["w_rel_err"] for s in u.stats[label].values()]
            u.rows.append({"mode": mode, "repeat": repeat, "time": label, "time_s": t,
                           "test_acc": acc, "test_loss": loss, "failed_devices": failed,
                           "w_rel_err_mean": float(np.mean(errs)) if errs else 0.0,
                           "calibration_reads": sum(cb.calibration_reads
                                                    for cb in arrays.values())})
            if self.plan.recover and label in self.plan.recover_at and \
                    mode in self.plan.recover_modes:
                u.recovery += self.recover(learner, net, label, t, acc, mode, repeat)
            if progress is not None:
                progress()
        return u

    # ---------------------------------------------------------------- recovery
    def recover(self, learner, net, label: str, t: float, acc0: float, mode: str,
                repeat: int) -> list:
        row = {"mode": mode, "repeat": repeat, "time": label, "time_s": t}
        rows = [{**row, "remedy": "nothing", "batches": 0, "test_acc": acc0, "pulses": 0,
                 "program_J": 0.0}]
        again, again_net = copy.deepcopy((learner, net))
        prng = np.random.default_rng([self.eval_cfg.crossbar.seed, 104729, repeat])
        for name, cb in self._arrays(again_net).items():
            cb.program(self.targets[name], prng)
        rows.append({**row, "remedy": "reprogram", "batches": 0,
                     "test_acc": self.accuracy(again)[1], "pulses": 0, "program_J": 0.0})
        del again, again_net
        fix, fix_net = copy.deepcopy((learner, net))
        if fix.pulses is not None:
            fix.pulses.take_stats()
        data, bs = self.run.data, self.cfg.training.batch_size
        rng = np.random.default_rng([repeat, 31337])
        pulses, energy, done = 0, 0.0, 0
        for target in self.plan.recover:
            while done < target:
                idx = rng.integers(0, data.x_train.shape[0], bs)
                fix.train_batch(data.x_train[idx], data.y_train[idx])
                done += 1
            if fix.pulses is not None:
                for s in fix.pulses.take_stats().values():
                    pulses += int(s.get("pulses", 0))
                    energy += float(s.get("program_J", 0.0))
            rows.append({**row, "remedy": "in_situ", "batches": done,
                         "test_acc": self.accuracy(fix)[1], "pulses": pulses,
                         "program_J": energy})
        return rows


def _relearner(cfg, net, opt):
    """The learner of a net whose arrays are already attached (an in-situ run's copy)."""
    from crossbar_ep.config.build import make_learner
    from dataclasses import replace as _r
    return make_learner(_r(cfg, crossbar=_r(cfg.crossbar, enabled=False)), net, opt)

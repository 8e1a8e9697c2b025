"""The builder: the one module that turns a validated :class:`~crossbar_ep.config.experiment.Config` into
objects (network of operators, crossbar arrays with pulse rules and observers, optimiser,
learner).  Nothing below it reads a Config; the Python API builds the same objects directly.
"""

from __future__ import annotations

import math
from dataclasses import replace
import os

import numpy as np

from crossbar_ep.circuit.ir_drop import WireSettings
from crossbar_ep.config.experiment import Config
from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery
from crossbar_ep.crossbar.energy import EnergyMeter
from crossbar_ep.crossbar.pulses import PulseStats
from crossbar_ep.crossbar.rules import make_rule
from crossbar_ep.devices.card import load_card
from crossbar_ep.model.heads import add_heads
from crossbar_ep.model.conv import make_conv_network
from crossbar_ep.model.learners import BPLearner, EPLearner
from crossbar_ep.model.network import Network, agt_links, make_network
from crossbar_ep.model.optim import SGD, Adam, Optimizer
from crossbar_ep.model.settle import Settler


def build_network(cfg: Config, n_in: int, n_out: int, rng: np.random.Generator) -> Network:
    """Create the topology of ``cfg`` and draw Glorot-uniform weights from ``rng``."""
    m, t = cfg.model, cfg.training
    L = cfg.n_hidden
    if m.conv.enabled:
        c = m.conv
        net = make_conv_network(cfg.image_shape(), c.channels, n_out, rng, kernel=c.kernel,
                                padding=c.padding, beta_i=cfg.beta_per_layer(),
                                beta_f=t.beta_f, lr=cfg.lr_per_matrix(), dtype=t.dtype,
                                activation=m.activation, feedback=m.feedback)
        if m.aux.layers:     # label heads on conv layers (validation refuses other targets)
            add_heads(net, m.aux.layers, m.aux.beta, m.aux.seed, m.aux.bp_weight)
        return net
    if m.residual.kind == "agt":
        fwd_links, fb_links = agt_links(L, m.residual.p, m.residual.seed,
                                        m.residual.seed_mode == "legacy")
    else:
        fwd_links, fb_links = list(cfg.residual_pairs()), None
    net = make_network((n_in, *m.hidden, n_out), rng, alpha=m.alpha,
                       beta_i=cfg.beta_per_layer(), beta_f=t.beta_f, feedback=m.feedback,
                       activation=m.activation, bias=m.bias, residual=fwd_links,
                       random_feedback=fb_links, lr=cfg.lr_per_matrix(), dtype=t.dtype,
                       feedback_gain=m.residual.feedback_gain)
    a = m.aux
    if a.target == "kd_features":
        add_heads(net, a.layers, a.beta, a.seed, a.bp_weight,
                  teacher_widths(cfg), linear=True)
    elif a.layers:
        add_heads(net, a.layers, a.beta, a.seed, a.bp_weight)
    return net


def teacher_widths(cfg: Config) -> list:
    """Widths of the teacher's hidden layers that the feature-hint heads match (same index)."""
    from crossbar_ep.config.experiment import config_from_dict, read_yaml
    from crossbar_ep.errors import ConfigError

    a = cfg.model.aux
    path = os.path.join(a.teacher, "config.yaml")
    where = f"{cfg.source}: model.aux.teacher"
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: {a.teacher} holds no config.yaml; give the run directory "
                          f"of a trained BP twin (crossbar-ep run <bp twin>.yaml --out DIR)")
    hidden = config_from_dict(read_yaml(path), path).model.hidden
    if max(a.layers) > len(hidden):
        raise ConfigError(f"{where}: the teacher has {len(hidden)} hidden layers; feature "
                          f"hints on layer {max(a.layers)} need a teacher at least that deep")
    return [hidden[k - 1] for k in a.layers]



def make_optimizer(training_cfg, params: list, lrs: dict) -> Optimizer:
    t = training_cfg
    if t.optimizer == "adam":
        opt = Adam(params, lrs, t.adam_beta1, t.adam_beta2, t.adam_eps)
    else:
        opt = SGD(params, lrs, t.momentum)
    opt.weight_decay = t.weight_decay
    return opt


def lr_factor(training_cfg, epoch: int, base: float) -> float:
    """Learning rate of epoch ``epoch`` (1-based) for a base rate: constant, or cosine from
    ``base`` to ``lr_min`` over ``schedule_epochs`` (CosineAnnealingLR stepped per epoch)."""
    t = training_cfg
    if t.lr_schedule != "cosine" or base == 0.0:
        return base
    period = t.schedule_epochs or t.epochs
    e = min(epoch - 1, period)
    return t.lr_min + (base - t.lr_min) * 0.5 * (1.0 + math.cos(math.pi * e / period))


def set_epoch_rates(net: Network, optimizer, training_cfg, epoch: int) -> None:
    """Learning rates of epoch ``epoch`` (1-based) by ``training.lr_schedule``, set from the
    base rates ``net.lr``; arrays' pulse gains follow the same schedule from their base."""
    if training_cfg.lr_schedule == "constant":
        return
    if optimizer is not None:
        for name, base in net.lr.items():
            optimizer.lrs[name] = lr_factor(training_cfg, epoch, base)
    for op in net.ops.values():
        if getattr(op, "lr_base", None) is not None:
            op.lr = lr_factor(training_cfg, epoch, op.lr_base)


def make_learner(cfg, net: Network, optimizer: Optimizer | None):
    """The EP or BP learner a config's ``training.algorithm`` selects (crossbar arrays
    attached to the projections ``crossbar.layers`` names)."""
    t = cfg.training
    if t.algorithm == "bp":
        return BPLearner(net, optimizer, training=t)
    if t.algorithm == "fa":
        from crossbar_ep.model.feedback_alignment import FALearner
        return FALearner(net, optimizer, training=t)
    pulses, meter, norm = _arrays_and_norm(cfg, net)
    settler = make_settler(cfg, net, meter)
    return EPLearner(net, settler, optimizer, training=t, pulses=pulses, norm=norm,
                     weight_noise=weight_noise_of(cfg, net))


def weight_noise_of(cfg, net: Network):
    """The hardware-aware training noise ``training.weight_noise_*`` asks for, or None."""
    from crossbar_ep.model.weight_noise import WeightNoise
    t = cfg.training
    if not (t.weight_noise_add or t.weight_noise_mul or t.weight_noise_card):
        return None
    sigma = {}
    if t.weight_noise_card:
        card = load_card(t.weight_noise_card)
        factors = per_matrix(cfg.crossbar.weight_range_factor, net)
        sigma = {p.name: card_weight_sigma(card, factors[p.name]) for p in net.projections}
    return WeightNoise(t.seed + 7, t.weight_noise_add, t.weight_noise_mul, sigma,
                       t.weight_noise_scale)


def card_weight_sigma(card, factor: float):
    """W (n_out, n_in) -> std of the weights a differential pair of ``card`` realises after
    programming W, with scale S = factor * max|W| (weight units per unit of normalised
    conductance): ``S / (G_max - G_min) sqrt(sigma(G+)^2 + sigma(G-)^2)``."""
    from crossbar_ep.devices.laws import make_law
    law = make_law("programming_noise", card.programming_noise)
    span = card.g_max_S - card.g_min_S

    def sigma(W: np.ndarray) -> np.ndarray:
        S = factor * max(float(np.abs(W).max()), 1e-30)
        u = np.clip(0.5 * W / S, -0.5, 0.5)
        gp, gn = card.g_min_S + (0.5 + u) * span, card.g_min_S + (0.5 - u) * span
        if not law.active:
            return np.zeros(W.shape)
        return S / span * np.sqrt(law.sigma_S(gp) ** 2 + law.sigma_S(gn) ** 2)
    return sigma


def make_settler(cfg, net: Network, meter=None) -> Settler:
    """The settle loop of a net as the config's ``training`` (T, K, nudge error) and
    ``settling`` sections set it, reading the net's operators as they are (crossbars
    already attached stay attached); ``meter`` an energy observer or None."""
    return Settler(net, training=cfg.training, settling=cfg.settling, meter=meter)


def _arrays_and_norm(cfg, net) -> tuple:
    """(pulse statistics, energy meter, per-projection update divisor): crossbars attached
    where ``crossbar.layers`` says; the EP normaliser where ``training.update_norm`` (or, for
    the arrays, ``crossbar.update.normalise``) asks for it, else 1."""
    pulses, meter = None, None
    digital = cfg.training.update_norm == "normalised"
    norm = {k: (v if digital else 1.0) for k, v in net.norm.items()}
    if cfg.crossbar.enabled:
        pulses, meter = attach_crossbars(cfg, net)
        arrays = cfg.crossbar.update.normalise
        arrays = digital if arrays is None else arrays    # one normalisation, one override
        for name in pulses.crossbars:
            norm[name] = net.norm[name] if arrays else 1.0
        return pulses, meter, norm
    attached = {n: op for n, op in net.ops.items() if isinstance(op, CrossbarMatrix)}
    if attached:          # arrays put on by hand (the Python API's attach_crossbar)
        pulses, meter = PulseStats(attached, next(iter(attached.values())).rng), EnergyMeter()
        for cb in attached.values():
            cb.observers += [pulses, meter]
    return pulses, meter, norm


def selected(cfg, net: Network) -> list:
    names = [p.name for p in net.projections]
    layers = cfg.crossbar.layers
    return names if "all" in layers else [n for n in names if n in layers]


def periphery_of(cfg) -> Periphery:
    return cfg.crossbar.periphery


def wires_of(cfg) -> WireSettings:
    return cfg.crossbar.wires


def build_crossbars(cfg, net: Network) -> tuple[dict, np.random.Generator]:
    """CrossbarMatrix per selected projection, programmed with its current weights and
    constructed complete (pulse rule, pulse gain, device clock per batch, drift
    compensation), not yet attached to the network; and the devices' rng."""
    c = cfg.crossbar
    card = load_card(c.device, c.device_params)
    rng = np.random.default_rng(c.seed)
    per = periphery_of(cfg)
    wires = wires_of(cfg)
    rule = make_pulse_rule(update_settings(cfg), rng)
    lrs = pulse_lrs(cfg, net)
    seconds = batch_seconds(cfg, card)
    arrays = {}
    factors = per_matrix(c.weight_range_factor, net)
    for name in selected(cfg, net):
        arrays[name] = CrossbarMatrix(net.W[name], card, rng, per, c.signed, c.tile_rows,
                                      c.tile_cols, factors[name], net.dtype, wires, c.iv,
                                      rule=rule, lr=lrs[name], seconds_per_update=seconds,
                                      drift_compensation=c.drift_compensation)
    return arrays, rng


def make_pulse_rule(update_cfg, rng: np.random.Generator):
    """The pulse rule ``crossbar.update.scheme`` names (:mod:`crossbar_ep.crossbar.rules`)."""
    return make_rule(update_cfg, rng)


def attach_crossbars(cfg, net: Network):
    """Put the projections ``crossbar.layers`` names on crossbar arrays; returns
    (PulseStats, EnergyMeter), subscribed to every array."""
    arrays, rng = build_crossbars(cfg, net)
    stats, meter = PulseStats(arrays, rng), EnergyMeter()
    for name, cb in arrays.items():
        cb.observers += [stats, meter]
        net.attach(name, cb)
    return stats, meter


def update_settings(cfg):
    """``crossbar.update`` with its batch-dependent defaults resolved (Tiki-Taka's
    ``transfer_columns: null`` -> one column per sample of ``training.batch_size``)."""
    u = cfg.crossbar.update
    if u.transfer_columns is None:
        u = replace(u, transfer_columns=int(cfg.training.batch_size))
    return u


def batch_seconds(cfg, card) -> float:
    """Simulated time (s) one training batch advances the devices' clocks by:
    ``crossbar.time_per_batch_s``, or the settling phases ``(T + K) tau_s`` (``T + 2K`` with
    centered nudging: two nudged phases) plus the update's pulse slots times the card's
    ``pulse_width_s`` (deterministic and mixed precision: ``max_pulses``, or the card's
    number of states without a cap; stochastic: ``batch_size * bl``; exact-update cards fire
    none) plus, for Tiki-Taka, each transfer's column reads (``transfer_columns *
    t_read_s``) and transfer pulse slots (``transfer_max_pulses * pulse_width_s``) spread
    over the ``transfer_every`` batches between transfers."""
    c, t = cfg.crossbar, cfg.training
    if c.time_per_batch_s is not None:
        return float(c.time_per_batch_s)
    u = update_settings(cfg)
    if not card.pulsed:
        slots = 0
    elif u.scheme == "stochastic":
        slots = t.batch_size * u.bl
    else:
        slots = u.max_pulses if u.max_pulses is not None else math.ceil(card.n_states)
    phases = t.T + t.K * (2 if t.nudging == "centered" else 1)
    seconds = phases * cfg.settling.tau_s + slots * card.pulse_width_s
    if u.scheme in ("tiki_taka", "chopped_tiki_taka"):
        transfer = u.transfer_columns * c.periphery.t_read_s + (
            u.transfer_max_pulses * card.pulse_width_s if card.pulsed else 0.0)
        seconds += transfer / u.transfer_every
    return seconds


def per_matrix(value, net: Network) -> dict:
    """Projection name -> value of a per-matrix setting given as one value or a tuple of
    L + 1 (W_0 .. W_{L-1}, W_f): a matrix takes its destination layer's entry (residual
    links too), readout and head matrices the last."""
    L = net.L
    per = tuple(value) if isinstance(value, tuple) else (value,) * (L + 1)
    return {p.name: per[p.dst - 1] if p.dst <= L else per[L] for p in net.projections}


def pulse_lrs(cfg, net: Network) -> dict:
    """Pulse gain per projection: crossbar.update.lr (or training.lr), per matrix rule."""
    lr = cfg.crossbar.update.lr
    if lr is None:
        return dict(net.lr)
    return per_matrix(lr, net)

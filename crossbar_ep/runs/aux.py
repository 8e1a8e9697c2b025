"""Auxiliary heads in a run: the distillation teacher, the per-layer signal diagnostics and
the heads' test accuracies (docs/model.md, "Intermediate error signals")."""

from __future__ import annotations

import os

import numpy as np

from crossbar_ep.errors import CheckpointError


def load_teacher(path: str, data, source: str = "model.aux.teacher"):
    """The BP-twin learner stored in run directory ``path``, with its trained weights; its
    input and output sizes must match ``data``."""
    from crossbar_ep.config.build import build_network
    from crossbar_ep.model.learners import BPLearner
    from crossbar_ep.runs.checkpoint import load_network_state
    from crossbar_ep.runs.rundir import RunDir

    rd = RunDir(path)
    cfg = rd.config()
    if cfg.training.algorithm != "bp":
        raise CheckpointError(f"{source}: {path} holds an EP run; the teacher is a BP twin "
                              f"(training.algorithm: bp): train one first, e.g. crossbar-ep "
                              f"run experiments/mnist_10hl_bp.yaml --out {path}")
    net = build_network(cfg, data.n_features, data.n_classes, np.random.default_rng(0))
    _, arrays = rd.read_checkpoint()
    load_network_state(net, arrays, os.path.join(path, "checkpoint.npz"))
    return BPLearner(net, None)


def attach(run) -> None:
    """Per-layer diagnostics on every EP run; the distillation targets when asked for."""
    from crossbar_ep.model.layer_stats import LayerStats

    learner, a = run.learner, run.cfg.model.aux
    if run.cfg.training.algorithm != "ep":
        return
    learner.layer_stats = LayerStats(run.net.L)
    if a.target == "kd_features":
        from crossbar_ep.model.distill import FeatureDistiller
        from crossbar_ep.model.heads import head_projections
        teacher = load_teacher(a.teacher, run.data)
        layers = {p.dst: p.src for p in head_projections(run.net)}
        learner.targets = FeatureDistiller(teacher, layers, run.net.L + 1)
    if a.target == "kd_logits":
        from crossbar_ep.model.distill import LogitDistiller
        from crossbar_ep.model.heads import head_projections
        teacher = load_teacher(a.teacher, run.data)
        heads = [p.dst for p in head_projections(run.net)]
        learner.targets = LogitDistiller(teacher, heads, run.net.L + 1, a.kd_tau, a.kd_mix)


def epoch_metrics(run) -> dict:
    """Flat per-epoch scalars: ``ds_L<k>`` (mean |s_nudged - s_free| of layer k) and
    ``dw_<name>`` (mean |dW| of a projection), averaged over the epoch's batches."""
    stats = getattr(run.learner, "layer_stats", None)
    if stats is None:
        return {}
    got = stats.take()
    row = {f"ds_L{k}": v for k, v in enumerate(got["layer_ds"], start=1)}
    row.update({f"dw_{name}": v for name, v in got["layer_dw"].items()})
    return row


def head_names(run) -> dict:
    """Auxiliary head index -> its readout's name (e.g. ``A3``)."""
    from crossbar_ep.model.heads import head_projections
    return {p.dst: p.name for p in head_projections(run.net) if p.dst not in run.net.linear_heads}

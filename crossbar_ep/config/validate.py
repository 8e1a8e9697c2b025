"""Cross-field checks of a parsed Config: combinations that single keys cannot express
(crossbar layers and card, trace selections, totals that bound the work), each error naming
the file, the key and the fix."""

from __future__ import annotations

import math
import os

from crossbar_ep.schema import MAX_ACTIVATIONS, MAX_STEPS, MAX_WEIGHTS, MIN_ATOL, Where
from crossbar_ep.yamlio import clip


def check_cross_fields(cfg) -> None:
    """Checks that span sections (run after every section has parsed on its own)."""
    w = Where(cfg.source, "")
    if cfg.training.nudge_error == "cumulative" and cfg.settling.mode == "ode" and \
            cfg.settling.method != "euler":
        raise w.child("training").child("nudge_error").fail(
            "cumulative grows the nudge step by step, defined for the discrete map and Euler "
            "steps only; use settling.method: euler, or another nudge_error")
    L = cfg.n_hidden
    if cfg.training.T < L and cfg.settling.mode == "discrete":
        raise w.child("training").child("T").fail(
            f"must be >= the number of hidden layers ({L}) so the input reaches the top "
            f"layer; got {cfg.training.T}")
    if isinstance(cfg.model.beta_i, tuple) and len(cfg.model.beta_i) != L:
        raise w.child("model").child("beta_i").fail(
            f"has {len(cfg.model.beta_i)} values but model.hidden has {L} layers; give one "
            f"value or {L}")
    if isinstance(cfg.training.lr, tuple) and len(cfg.training.lr) != L + 1:
        raise w.child("training").child("lr").fail(
            f"has {len(cfg.training.lr)} values; give one value or {L + 1} "
            f"(W_0 .. W_{L - 1}, W_f)")
    r = cfg.model.residual
    rw = w.child("model").child("residual")
    if r.kind == "pairs":
        if not r.pairs:
            raise rw.child("pairs").fail("kind is 'pairs' but the list is empty")
        seen = set()
        for i, pair in enumerate(r.pairs):
            pw = rw.child("pairs").child(i)
            if len(pair) != 2:
                raise pw.fail(f"expected [from, to], got {clip(list(pair))}")
            a, b = pair
            if not (1 <= a <= L and 1 <= b <= L):
                raise pw.fail(f"layers must lie in 1..{L} (hidden layers), got {list(pair)}")
            if a >= b:
                raise pw.fail(f"from must be < to (feedback partners are added "
                              f"automatically), got {list(pair)}")
            if b - a < 2:
                raise pw.fail(f"layers {a} and {b} are adjacent and already linked")
            if (a, b) in seen:
                raise pw.fail(f"duplicate link {list(pair)}")
            seen.add((a, b))
    elif r.pairs:
        raise rw.child("pairs").fail(f"only used with kind: pairs (kind is '{r.kind}')")
    if r.kind == "every-3" and L < 4:
        raise rw.child("kind").fail(f"every-3 needs at least 4 hidden layers, model has {L}")
    if r.kind == "agt" and cfg.model.feedback != "random":
        raise rw.child("kind").fail("agt links are asymmetric: set model.feedback: random")
    if cfg.training.algorithm == "fa":
        _check_fa(cfg, w)
    t = cfg.training
    if (t.weight_noise_add or t.weight_noise_mul or t.weight_noise_card) and \
            t.algorithm != "ep":
        raise w.child("training").child("weight_noise_add").fail(
            "weight noise injection is for EP training (the BP twin stays noise-free); set "
            "the training.weight_noise_* keys to 0 / null")
    if cfg.settling.mode == "discrete" and cfg.settling.dt_over_tau != 1.0:
        raise w.child("settling").child("dt_over_tau").fail(
            "only used with settling.mode: ode (the discrete map has dt = tau)")
    if cfg.settling.max_steps is not None and cfg.settling.max_steps < L:
        raise w.child("settling").child("max_steps").fail(
            f"must be >= the number of hidden layers ({L})")
    _check_aux(cfg, w)
    _check_conv(cfg, w)
    _check_crossbar(cfg, w)
    _check_traces(cfg, w)
    if cfg.training.update_norm == "normalised" and min(cfg.beta_per_layer()) <= 0.0:
        raise w.child("training").child("update_norm").fail(
            "normalised updates divide by beta_i, so every model.beta_i must be > 0")
    _check_magnitudes(cfg, w)


def _check_fa(cfg, w: Where) -> None:
    """Feedback alignment sends errors back through the net's fixed random feedback."""
    m = cfg.model
    fixes = [(m.feedback != "random", ("model", "feedback"), "must be random (FA sends the "
              "errors back through the fixed random feedback matrices)"),
             (m.residual.kind == "agt", ("model", "residual", "kind"), "AGT skips have no "
              "feedback partner to send errors through; use none, every-3 or pairs"),
             (m.conv.enabled, ("model", "conv", "channels"), "FA is implemented for layered "
              "nets; use training.algorithm: bp for conv nets"),
             (bool(m.aux.layers), ("model", "aux", "layers"), "FA trains the readout alone; "
              "remove the heads")]
    for bad, path, msg in fixes:
        if bad:
            where = w
            for part in path:
                where = where.child(part)
            raise where.fail(f"with training.algorithm: fa {msg}")


def _check_aux(cfg, w: Where) -> None:
    a, L = cfg.model.aux, cfg.n_hidden
    aw = w.child("model").child("aux")
    for i, k in enumerate(a.layers):
        if not 1 <= k <= L:
            raise aw.child("layers").child(i).fail(f"hidden layers are 1..{L}, got {k}")
    if len(set(a.layers)) != len(a.layers):
        raise aw.child("layers").fail("a layer is listed twice; one head per layer")
    for name in ("beta", "bp_weight"):
        v = getattr(a, name)
        if isinstance(v, tuple) and len(v) != len(a.layers):
            raise aw.child(name).fail(f"has {len(v)} values for {len(a.layers)} heads; give "
                                      f"one value or one per head")
    if a.target != "label":
        if not a.layers:
            raise aw.child("target").fail(f"{a.target} needs heads: list model.aux.layers")
        if a.teacher is None:
            raise aw.child("teacher").fail(f"missing: {a.target} needs the run directory of "
                                           f"a trained BP twin (training.algorithm: bp)")
        if cfg.training.algorithm != "ep":
            raise aw.child("target").fail("distillation trains an EP student; the BP twin "
                                          "uses target: label")


def _check_magnitudes(cfg, w: Where) -> None:
    """Products of keys that would mean an absurd allocation, loop or division."""
    d, t, s = cfg.data, cfg.training, cfg.settling
    synthetic = d.dataset == "synthetic"
    if synthetic and (d.synthetic_train + d.synthetic_test) * d.synthetic_features > \
            MAX_ACTIVATIONS:
        raise w.child("data").child("synthetic_features").fail(
            f"(synthetic_train + synthetic_test) x synthetic_features exceeds "
            f"{MAX_ACTIVATIONS:.0e} values; generate fewer or smaller samples")
    sizes = [d.synthetic_features if synthetic else 784, *cfg.model.hidden,
             d.synthetic_classes if synthetic else 10]
    n_weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    if n_weights > MAX_WEIGHTS:
        raise w.child("model").child("hidden").fail(
            f"the net would have {n_weights:.3g} weights, above the limit of "
            f"{MAX_WEIGHTS:.0e}; use narrower layers")
    for name in ("batch_size", "eval_batch_size"):
        if getattr(t, name) * sum(cfg.model.hidden) > MAX_ACTIVATIONS:
            raise w.child("training").child(name).fail(
                f"{name} x the hidden units ({sum(cfg.model.hidden)}) exceeds "
                f"{MAX_ACTIVATIONS:.0e} states; use smaller batches")
    if s.mode == "ode" and s.method != "adaptive" and \
            max(t.T, t.K) / s.dt_over_tau > MAX_STEPS:
        raise w.child("settling").child("dt_over_tau").fail(
            f"a phase of {max(t.T, t.K)} tau in steps of {s.dt_over_tau:g} tau takes more than "
            f"{MAX_STEPS} steps; use a larger step or shorter phases")
    if s.mode == "ode" and s.method == "adaptive" and s.atol < MIN_ATOL[t.dtype]:
        raise w.child("settling").child("atol").fail(
            f"{s.atol:g} is below the floor for {t.dtype} ({MIN_ATOL[t.dtype]:g}): rounding "
            f"noise or the step count would keep settling from ending; raise atol"
            + (" or use training.dtype: float64" if t.dtype == "float32" else ""))
    if s.tolerance_mode == "relative" and s.mode == "ode" and s.method == "adaptive":
        raise w.child("settling").child("tolerance_mode").fail(
            "relative needs fixed steps (the adaptive method stops on its absolute residual); "
            "use method euler or heun, or tolerance_mode: absolute")
    if s.solver == "anderson":
        sw = w.child("settling").child("solver")
        if s.mode != "discrete":
            raise sw.fail("anderson accelerates the discrete map's fixed point; use "
                          "settling.mode: discrete, or solver: plain")
        if t.nudge_error == "cumulative":
            raise sw.fail("a cumulative nudge grows every step, so the nudged phase has no "
                          "fixed point to accelerate; use training.nudge_error recomputed or "
                          "frozen, or solver: plain")
        if s.average_last > 1:
            raise sw.fail("phase averaging averages the plain map's last steps; use "
                          "settling.average_last: 1 with anderson")
    if s.average_last > 1 and s.mode == "ode" and s.method == "adaptive":
        raise w.child("settling").child("average_last").fail(
            f"{s.average_last}: phase averaging needs fixed steps; use method euler or heun, "
            f"or average_last: 1")
    norm = t.beta_f * math.prod(cfg.beta_per_layer())
    normalised = t.update_norm == "normalised" or (cfg.crossbar.enabled and
                                                   cfg.crossbar.update.normalise)
    if normalised and norm < 1e-30:
        raise w.child("model").child("beta_i").fail(
            f"normalised updates divide by beta_f x beta_i over the hops, down to {norm:.3g}; "
            f"below 1e-30 the division overflows: use larger beta_i or raw updates")


def _check_crossbar(cfg, w: Where) -> None:
    c = cfg.crossbar
    cw = w.child("crossbar")
    if not c.enabled:
        return
    if cfg.training.algorithm != "ep":
        raise cw.child("enabled").fail("crossbar training is in situ EP: set training.algorithm"
                                       ": ep (the BP twin runs on the ideal backend)")
    if not c.device:
        raise cw.child("device").fail("missing: name a device card, e.g. "
                                      "device_models/ecram_li_tang2018.yaml")
    if c.device_params:
        from crossbar_ep.devices.card import load_card
        if os.path.isfile(c.device):
            load_card(c.device, c.device_params)   # bad names or values fail here
    L = cfg.n_hidden
    known = set(cfg_matrix_names(cfg))
    for i, name in enumerate(c.layers):
        if name == "all":
            if len(c.layers) > 1:
                raise cw.child("layers").child(i).fail("'all' cannot be combined with names")
            continue
        if name not in known and not (cfg.model.residual.kind == "agt" and name.startswith("R")):
            import difflib
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise cw.child("layers").child(i).fail(
                f"no matrix {clip(repr(name))} in this net (has {', '.join(sorted(known))}){hint}")
    if c.iv.law != "linear":
        wi = c.wires
        if wi.r_wire_row_ohm or wi.r_wire_col_ohm or wi.r_driver_ohm or wi.r_sense_ohm:
            raise cw.child("iv").child("law").fail(
                f"{c.iv.law} devices with wire resistance need a Newton solve per read and "
                f"sample, too costly in the settling loop: train with law linear and wires, "
                f"or ideal wires and a nonlinear law (the nodal solver and export-netlist "
                f"handle both together)")
        if c.signed != "differential":
            raise cw.child("iv").child("law").fail(
                "a nonlinear law needs crossbar.signed: differential (the reference column's "
                "transposed read would not superpose)")
    for where, value in ((cw.child("update").child("lr"), c.update.lr),
                         (cw.child("weight_range_factor"), c.weight_range_factor)):
        if isinstance(value, tuple) and len(value) != L + 1:
            raise where.fail(f"has {len(value)} values; give one value or {L + 1} "
                             f"(W_0 .. W_{L - 1}, W_f)")
    if c.update.normalise and min(cfg.beta_per_layer()) <= 0.0:
        raise cw.child("update").child("normalise").fail("needs every model.beta_i > 0")
    if c.update.threshold != 1.0 and c.update.scheme != "mixed_precision":
        raise cw.child("update").child("threshold").fail(
            f"is the firing threshold of the mixed_precision accumulator; scheme "
            f"{c.update.scheme} has none: set crossbar.update.scheme: mixed_precision or "
            f"threshold: 1")
    if c.update.momentum and c.update.scheme != "mixed_precision":
        raise cw.child("update").child("momentum").fail(
            f"is the digital velocity of the mixed_precision scheme; scheme "
            f"{c.update.scheme} has none: set crossbar.update.scheme: mixed_precision or "
            f"momentum: 0")


def _check_traces(cfg, w: Where) -> None:
    t = cfg.traces
    tw = w.child("traces")
    if not t.enabled:
        return
    if os.path.basename(t.file) != t.file or not t.file:
        raise tw.child("file").fail(f"{clip(repr(t.file))}: give a plain file name; the file "
                                    f"is written inside the run directory")
    from crossbar_ep.schema import parse_tile
    c = cfg.crossbar
    for i, spec in enumerate(t.tiles):
        try:
            name, ri, ci = parse_tile(spec)
        except ValueError as exc:
            raise tw.child("tiles").child(i).fail(clip(exc)) from None
        if not c.enabled:
            raise tw.child("tiles").child(i).fail("tile reads need the crossbar backend "
                                                  "(crossbar.enabled: true)")
        if name not in set(cfg_matrix_names(cfg)):
            raise tw.child("tiles").child(i).fail(
                f"no matrix {clip(repr(name))} (has {', '.join(cfg_matrix_names(cfg))})")


def cfg_matrix_names(cfg) -> list:
    L = cfg.n_hidden
    if cfg.model.conv.enabled:
        return [*(f"C{k}" for k in range(1, L + 1)), "Wf",
                *(f"A{k}" for k in cfg.model.aux.layers)]
    return ["W0", *(f"W{k}" for k in range(1, L)), "Wf",
            *(f"R{a}_{b}" for a, b in cfg.residual_pairs()),
            *(f"A{k}" for k in cfg.model.aux.layers)]


def _check_conv(cfg, w: Where) -> None:
    """A conv net (model.conv.channels): the settings its model defines, and its geometry."""
    c, m, t, d = cfg.model.conv, cfg.model, cfg.training, cfg.data
    mw, cw = w.child("model"), w.child("model").child("conv")
    if d.mean is not None and d.std is not None and len(d.mean) != len(d.std):
        raise w.child("data").child("std").fail(f"has {len(d.std)} values, data.mean "
                                                f"{len(d.mean)}; give one per channel")
    if not c.enabled:
        return
    L = len(c.channels)
    for name in ("kernel", "padding"):
        v = getattr(c, name)
        if isinstance(v, tuple) and len(v) != L:
            raise cw.child(name).fail(f"has {len(v)} values for {L} conv layers; give one "
                                      f"value or {L}")
    if m.residual.kind != "none":
        raise mw.child("residual").child("kind").fail(
            "conv nets (model.conv.channels) have no residual or AGT links: a skip link "
            "between maps of different sizes has no kernel geometry here; set it to none")
    if m.aux.target == "kd_features":
        raise mw.child("aux").child("target").fail(
            "feature hints match a dense teacher's hidden layers; conv nets take label or "
            "kd_logits heads")
    shape = cfg.image_shape()
    n_in = d.synthetic_features if d.dataset == "synthetic" else \
        {"cifar10": 3 * 32 * 32, "cifar100": 3 * 32 * 32}.get(d.dataset, 784)
    if d.dataset == "synthetic" and c.input_shape is None:
        raise cw.child("input_shape").fail("synthetic data needs [channels, height, width] "
                                           "with their product = data.synthetic_features")
    if math.prod(shape) != n_in:
        raise cw.child("input_shape").fail(f"{list(shape)} holds {math.prod(shape)} values but "
                                           f"the {d.dataset} images have {n_in}")
    if d.mean is not None and len(d.mean) != shape[0]:
        raise w.child("data").child("mean").fail(f"has {len(d.mean)} values for images of "
                                                 f"{shape[0]} channels")
    from crossbar_ep.model.conv import conv_geoms
    per = (lambda v: tuple(v) if isinstance(v, tuple) else (v,) * L)
    try:
        geoms = conv_geoms(shape, c.channels, per(c.kernel), per(c.padding))
    except ValueError as exc:
        raise cw.child("channels").fail(f"{exc}; use smaller kernels, more padding or fewer "
                                        f"layers") from None
    big = t.batch_size * sum(g.positions * g.patch for g in geoms)
    if big > MAX_ACTIVATIONS:
        raise w.child("training").child("batch_size").fail(
            f"the patch matrices of a batch would hold {big:.3g} values (limit "
            f"{MAX_ACTIVATIONS:.0e}); use smaller batches")

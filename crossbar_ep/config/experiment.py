"""Experiment configuration: YAML -> typed, frozen :class:`Config`, validated with key paths.

Load with :func:`load_config` (a file plus optional ``--set key=value`` overrides).  Every
key, its default and its unit are listed in ``docs/config.md``, which is generated from
this module by ``python -m crossbar_ep.config.docs`` and checked by the test suite.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import yaml

from crossbar_ep import shipped, yamlio
from crossbar_ep.circuit.ir_drop import WireSettings
from crossbar_ep.circuit.iv import IVLaw
from crossbar_ep.config.validate import check_cross_fields, cfg_matrix_names  # noqa: F401
from crossbar_ep.crossbar.periphery import Periphery
from crossbar_ep.crossbar.update_settings import UpdateSettings
from crossbar_ep.errors import ConfigError
from crossbar_ep.schema import (
    MAX_GAIN,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_STEPS,
    MAX_UNITS,
    Where,
    build_section,
    key,
    p_bool,
    p_choice,
    p_float,
    p_int,
    p_list,
    p_mapping,
    p_optional,
    p_scalar_or_list,
    p_str,
    section,
    section_keys,
    to_plain,
)
from crossbar_ep.yamlio import clip

from crossbar_ep.model.options import SettlingConfig, TrainingConfig  # noqa: E402,F401
from crossbar_ep.config.model_sections import (  # noqa: E402,F401  (re-exported)
    DATASETS,
    AuxConfig,
    ConvConfig,
    DataConfig,
    ModelConfig,
    ResidualConfig,
)


PulseUpdateConfig = UpdateSettings   # the crossbar.update section (former name)


@dataclass(frozen=True)
class CrossbarConfig:
    enabled: bool = key(False, "Store weight matrices on resistive crossbar arrays.", p_bool())
    device: str | None = key(None, "Device card: a YAML file (relative paths: from the "
                             "experiment file's folder, the working directory, or the folder "
                             "above the experiment's) or a shipped card's name, e.g. "
                             "ecram_li_tang2018 (crossbar-ep device list).",
                             p_optional(p_str()))
    device_params: dict | None = key(None, "Overrides of the card's parameters, for sweeps: "
                                     "a model parameter (up_down, dw_min_dtod, dw_min_std, "
                                     "...), a fault fraction (stuck_at_gmin_frac, "
                                     "stuck_at_gmax_frac), g_min_S / g_max_S, n_states (sets "
                                     "dw_min = (w_max - w_min) / n_states) or variation "
                                     "(multiplies every *_dtod spread). Units as in "
                                     "docs/devices.md.", p_optional(p_mapping(p_float())))
    layers: tuple = key(("all",), "Matrices on crossbars: all, or names W0 .. W{L-1}, Wf, "
                        "Ra_b (residual links).", p_list(p_str(), min_len=1))
    signed: str = key("differential", "Signed weights by differential pairs (G+ - G-) or one "
                      "device plus a reference column at mid conductance.",
                      p_choice("differential", "reference"))
    tile_rows: int = key(256, "Rows (inputs) per physical array.", p_int(lo=1, hi=MAX_UNITS),
                         "rows")
    tile_cols: int = key(256, "Columns (outputs) per physical array.",
                         p_int(lo=1, hi=MAX_UNITS), "columns")
    weight_range_factor: Any = key(2.0, "Weight-to-conductance scale of each matrix: the "
                                   "full conductance swing equals this factor times the "
                                   "matrix's largest initial |W|; one value, or one per "
                                   "weight matrix like training.lr (W_0 .. W_{L-1}, W_f), e.g. "
                                   "a wider range for a readout whose weights outgrow twice "
                                   "their initial bound (docs/crossbar.md).",
                                   p_scalar_or_list(p_float(lo=1.0, hi=MAX_GAIN)))
    seed: int = key(12345, "Seed of the devices' variation, faults and noise.",
                    p_int(lo=0, hi=MAX_SEED))
    time_per_batch_s: float | None = key(
        None, "Simulated time one training batch takes on the devices' clocks (drift acts on "
        "the reads as it passes). null computes it: (training.T + training.K) x settling.tau_s "
        "for the settling phases (T + 2K with centered nudging), plus the update's pulse slots "
        "x the card's pulse_width_s (deterministic and mixed precision: update.max_pulses, or "
        "the card's number of states without a cap; stochastic: batch_size x update.bl; none "
        "for exact-update cards), plus Tiki-Taka's transfers (transfer_columns reads of "
        "periphery.t_read_s and transfer_max_pulses pulse slots, every transfer_every "
        "batches).",
        p_optional(p_float(lo=0.0, hi=1.0e9)), "s")
    drift_compensation: str = key(
        "none", "Drift compensation in the periphery (docs/devices.md): none; global (one "
        "digital output gain per matrix: a calibration read of stored reference inputs, "
        "recorded after programming, over the same read now); column (one gain per output "
        "line). The calibration reads cost reads and energy like any read.",
        p_choice("none", "global", "column"))
    periphery: Periphery = section(Periphery, "DAC, ADC and read noise.")
    wires: WireSettings = section(WireSettings, "Wire, driver and sense resistances of every "
                                 "tile (IR drop by exact nodal analysis in every read).")
    iv: IVLaw = section(IVLaw, "Device current-voltage law of the reads.")
    update: UpdateSettings = section(UpdateSettings, "In-situ updates by pulses.")


@dataclass(frozen=True)
class TracesConfig:
    enabled: bool = key(False, "Record an HDF5 trace file of the run (schema: "
                        "docs/hdf5_schema.md).", p_bool())
    file: str = key("traces.h5", "Trace file name, inside the run directory.", p_str())
    every_epochs: int = key(1, "Detailed records (conductances, per-device pulses, recorded "
                            "batches) for epoch 1 and every N-th epoch; metrics and settle "
                            "statistics are kept for every epoch.", p_int(lo=1, hi=MAX_STEPS),
                            "epochs")
    batches: tuple = key((0,), "Batch indices (0-based; negative counts from the end) of a "
                         "recorded epoch whose trajectories, tile reads and per-device pulse "
                         "counts are kept.", p_list(p_int(lo=-MAX_STEPS, hi=MAX_STEPS)))
    samples: int = key(16, "Samples of each recorded batch whose trajectories and tile reads "
                       "are kept.", p_int(lo=1, hi=MAX_SAMPLES), "samples")
    trajectories: bool = key(True, "Neuron states of every layer at every settle step, free "
                             "and nudged phases.", p_bool())
    conductances: bool = key(True, "Snapshot of every array's conductances (G+ and G-) and "
                             "of the effective weights per recorded epoch.", p_bool())
    pulses: bool = key(True, "Per-device pulse counts: of each recorded batch's update, and "
                       "summed over each recorded epoch.", p_bool())
    settle: bool = key(True, "Settle residual and steps of every batch, both phases.",
                       p_bool())
    tiles: tuple = key((), "Tiles whose reads are recorded (sensed currents in A and ADC "
                       "codes), as MATRIX:ROW_TILE:COL_TILE, e.g. W1:0:0.  Needs non-ideal "
                       "periphery (ideal reads are exact products).", p_list(p_str()))
    compression: int = key(4, "gzip level of large datasets (0: none).", p_int(lo=0, hi=9))


@dataclass(frozen=True)
class Config:
    name: str = key("experiment", "Experiment name (used in the run directory name).", p_str())
    description: str = key("", "Free text.", p_str())
    data: DataConfig = section(DataConfig, "Data set and splits.")
    model: ModelConfig = section(ModelConfig, "FRE-RNN architecture.")
    training: TrainingConfig = section(TrainingConfig, "Learning algorithm and optimiser.")
    settling: SettlingConfig = section(SettlingConfig, "How each phase is integrated.")
    crossbar: CrossbarConfig = section(CrossbarConfig, "Crossbar backend (off: ideal digital).")
    traces: TracesConfig = section(TracesConfig, "HDF5 traces for circuit designers.")
    source: str = "<memory>"  # file the config came from (not a YAML key)

    @property
    def n_hidden(self) -> int:
        """Hidden layers: conv layers of a conv net, else model.hidden."""
        c = self.model.conv
        return len(c.channels) if c.enabled else len(self.model.hidden)

    def image_shape(self) -> tuple:
        """(C, H, W) of the input images of a conv net (model.conv.input_shape or the data
        set's)."""
        c = self.model.conv
        if c.input_shape is not None:
            return tuple(c.input_shape)
        return {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}.get(self.data.dataset,
                                                                      (1, 28, 28))

    def beta_per_layer(self) -> tuple:
        """beta_i for hidden layers 1..L (tuple of L floats)."""
        b = self.model.beta_i
        return tuple(b) if isinstance(b, tuple) else (b,) * self.n_hidden

    def lr_per_matrix(self) -> tuple:
        """Learning rate of W_0 .. W_{L-1}, W_f (tuple of L+1 floats)."""
        lr = self.training.lr
        return tuple(lr) if isinstance(lr, tuple) else (lr,) * (self.n_hidden + 1)

    def residual_pairs(self) -> tuple:
        """Forward skip links (from, to), 1-based hidden layers, from the residual kind."""
        r, L = self.model.residual, self.n_hidden
        if r.kind == "every-3":
            return tuple((j, j + 3) for j in range(1, L - 2, 3))
        if r.kind == "pairs":
            return tuple(tuple(p) for p in r.pairs)
        return ()

    def to_dict(self) -> dict:
        return to_plain(self)


def parse_override(text: str, check_key: bool = False) -> tuple[list[str], Any]:
    """``training.epochs=2`` -> (['training', 'epochs'], 2); the value is parsed as YAML
    (with the same limits as a file).  ``check_key`` fails on a path naming no config key."""
    shown = f"--set {clip(text)}"
    if "=" not in text:
        raise ConfigError(f"{shown}: expected KEY=VALUE, e.g. --set training.epochs=2")
    k, v = text.split("=", 1)
    path = [p for p in k.strip().split(".") if p]
    if not path:
        raise ConfigError(f"{shown}: empty key")
    if check_key:
        _check_override_key(path, shown)
    try:
        value = yamlio.load(v, shown) if v.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{shown}: value is not valid YAML ({clip(exc, 600)})") from None
    return path, value


def _check_override_key(path: list[str], shown: str) -> None:
    """Fail on a key path that names no config key (``training.nope``)."""
    cls, done = Config, []
    for i, part in enumerate(path):
        fields = {f.name: f for f in section_keys(cls)}
        f = fields.get(part)
        if f is None:
            import difflib
            close = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.5)
            hint = f"did you mean '{'.'.join(done + [close[0]])}'? " if close else ""
            where = ".".join(done) or "the top level"
            raise ConfigError(f"{shown}: unknown key '{clip('.'.join(done + [part]), 80)}'; "
                              f"{hint}({where} has {', '.join(fields)})")
        done.append(part)
        if "section" in f.metadata:
            cls = f.metadata["section"]
        elif i < len(path) - 1:
            if "mapping of" in getattr(f.metadata["parse"], "type_name", ""):
                return   # names inside a mapping (crossbar.device_params.NAME) are free
            raise ConfigError(f"{shown}: '{'.'.join(done)}' is a value, not a section")


def apply_overrides(raw: dict, overrides: list[str], check_keys: bool = False) -> dict:
    """Return a copy of ``raw`` with every ``key.path=value`` override set."""
    import copy

    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text, check_keys)
        node = raw
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None or isinstance(nxt, str):
                # a shorthand scalar (residual: every-3) becomes a mapping
                nxt = {} if nxt is None else {"kind": nxt}
                node[part] = nxt
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {clip(text)}: '{part}' is not a section")
            node = nxt
        node[path[-1]] = value
    return raw


def config_from_dict(raw: Any, source: str = "<memory>") -> Config:
    """Validate a plain mapping (as read from YAML) into a :class:`Config`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the file must hold a mapping of sections "
                          f"(data, model, training, settling), got {type(raw).__name__}")
    cfg = build_section(Config, raw, Where(source, ""))
    cfg = replace(cfg, source=source)
    check_cross_fields(cfg)
    return cfg


def read_yaml(path: str, what: str = "experiment file") -> Any:
    """The parsed YAML of ``path`` (limits: :mod:`crossbar_ep.yamlio`); an empty file fails."""
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no such {what}")
    try:
        raw = yamlio.load_file(path, what)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {clip(exc, 600)}") from None
    if raw is None:
        raise ConfigError(f"{path}: the {what} is empty; write at least one section (or {{}} "
                          f"for every default)")
    return raw


def load_config(path: str, overrides: list[str] | None = None) -> Config:
    """Read, override and validate an experiment file (a path, or the name of a shipped
    experiment: :mod:`crossbar_ep.shipped`)."""
    path = shipped.resolve_experiment(path)
    raw = read_yaml(path)
    if overrides:
        if not isinstance(raw, dict):
            raw = {}
        raw = apply_overrides(raw, overrides, check_keys=True)
    cfg = config_from_dict(raw, source=path)
    base, user = os.path.dirname(os.path.abspath(path)), shipped.user_folder(path)
    d = cfg.data
    if d.dir is not None and not os.path.isabs(d.dir):
        cfg = replace(cfg, data=replace(d, dir=os.path.normpath(os.path.join(user, d.dir))))
    aux = cfg.model.aux
    if aux.teacher is not None and not os.path.isabs(aux.teacher):
        teacher = os.path.normpath(os.path.join(user, aux.teacher))
        cfg = replace(cfg, model=replace(cfg.model, aux=replace(aux, teacher=teacher)))
    dev = cfg.crossbar.device
    if dev is not None and not os.path.isabs(dev):
        cfg = replace(cfg, crossbar=replace(cfg.crossbar, device=_card_at(dev, base)))
    wn = cfg.training.weight_noise_card
    if wn is not None and not os.path.isabs(wn):
        cfg = replace(cfg, training=replace(cfg.training, weight_noise_card=_card_at(wn, base)))
    return cfg


def _card_at(dev: str, base: str) -> str:
    """A card reference as a path: from the experiment's folder, the working directory, the
    folder above experiments/, or a shipped card's name."""
    tries = [os.path.join(base, dev), dev, os.path.join(base, os.pardir, dev)]
    return next((os.path.abspath(t) for t in tries if os.path.exists(t)),
                shipped.card_path(dev) or os.path.abspath(tries[0]))


def dump_config(cfg: Config, path: str) -> None:
    """Write the fully resolved config (every key, defaults filled in) as YAML."""
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)

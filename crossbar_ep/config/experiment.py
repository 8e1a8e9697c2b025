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

from crossbar_ep import yamlio
from crossbar_ep.circuit.ir_drop import WireSettings
from crossbar_ep.circuit.iv import IVLaw
from crossbar_ep.config.validate import _check_cross_fields, cfg_matrix_names  # noqa: F401
from crossbar_ep.crossbar.periphery import Periphery
from crossbar_ep.errors import ConfigError
from crossbar_ep.schema import (
    MAX_GAIN,
    MAX_LAYERS,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_STEPS,
    MAX_UNITS,
    MIN_ATOL,
    Where,
    _keys,
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
    to_plain,
)
from crossbar_ep.yamlio import clip

DATASETS = ("mnist", "fashion-mnist", "cifar10", "synthetic")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = key("mnist", "Data set: mnist, fashion-mnist, cifar10 (the python-pickle "
                       "folder cifar-10-batches-py, supplied by the user: docs/data.md), or "
                       "synthetic (generated, for tests and demos).", p_choice(*DATASETS))
    dir: str | None = key(None, "Data directory searched first (holding mnist/ or "
                          "fashion-mnist/, or the IDX files themselves). Relative paths are "
                          "taken from the experiment file's folder.", p_optional(p_str()))
    download: bool = key(True, "Download missing MNIST / Fashion-MNIST files into the per-user "
                         "cache (checksums verified).", p_bool())
    train_subset: int | None = key(None, "Use only the first N training samples (after the "
                                   "validation split).", p_optional(p_int(lo=1, hi=MAX_SAMPLES)))
    test_subset: int | None = key(None, "Use only the first N test samples.",
                                  p_optional(p_int(lo=1, hi=MAX_SAMPLES)))
    validation: int = key(0, "Training samples held out (seeded draw) as a validation set; "
                          "0 for none.", p_int(lo=0, hi=MAX_SAMPLES), "samples")
    mean: tuple | None = key(None, "Per-channel mean subtracted from the [0, 1] images (one "
                             "value per input channel), e.g. CIFAR-10's [0.4914, 0.4822, "
                             "0.4465]; null: none.", p_optional(p_list(p_float(), min_len=1)))
    std: tuple | None = key(None, "Per-channel standard deviation the images are divided by "
                            "after `mean`; null: none.",
                            p_optional(p_list(p_float(lo=0.0, lo_open=True), min_len=1)))
    synthetic_features: int = key(64, "Synthetic set: input dimension.",
                                 p_int(lo=1, hi=MAX_UNITS))
    synthetic_classes: int = key(10, "Synthetic set: number of classes.",
                                  p_int(lo=2, hi=MAX_UNITS))
    synthetic_train: int = key(2000, "Synthetic set: training samples.",
                              p_int(lo=1, hi=MAX_SAMPLES), "samples")
    synthetic_test: int = key(500, "Synthetic set: test samples.",
                             p_int(lo=1, hi=MAX_SAMPLES), "samples")


@dataclass(frozen=True)
class ResidualConfig:
    SHORTHAND = "kind"
    kind: str = key("none", "Residual topology: none; every-3 (long-range bidirectional links "
                    "1<->4, 4<->7, ...); pairs (the explicit list in `pairs`); agt (arbitrary "
                    "graph topology: each ordered pair of non-adjacent hidden layers linked "
                    "with probability p).", p_choice("none", "every-3", "pairs", "agt"))
    pairs: tuple = key((), "For kind=pairs: forward links [from, to] between hidden layers "
                       "(1-based, from < to, non-adjacent); each gets a feedback partner.",
                       p_list(p_list(p_int(lo=1, hi=MAX_LAYERS))))
    p: float = key(0.2, "For kind=agt: link probability per ordered pair.",
                   p_float(lo=0.0, hi=1.0))
    seed: int = key(0, "For kind=agt: seed of the random graph.", p_int(lo=0, hi=MAX_SEED))
    seed_mode: str = key("default", "For kind=agt: how the seed draws the graph. default: "
                         "NumPy's Generator over the non-adjacent ordered pairs; legacy: the "
                         "authors' code (np.random.seed(seed), then one rand() per ordered pair "
                         "i != j, adjacent pairs included), so their seeds reproduce their "
                         "graphs.", p_choice("default", "legacy"))
    feedback_gain: str = key("uniform", "Gain of the skip feedback links (residual partners, "
                             "AGT feedback): uniform (beta_i of the target layer, as the "
                             "authors' graph code) or graded (the product of the gains of the "
                             "adjacent chain it bypasses, beta_j / alpha per hop for tied "
                             "links; then normalised EP updates tend to the BP / feedback-"
                             "alignment gradient, docs/model.md).",
                             p_choice("uniform", "graded"))


@dataclass(frozen=True)
class AuxConfig:
    layers: tuple = key((), "Hidden layers (1-based) that get an auxiliary head: a learned "
                        "readout of that layer that nudges it in the nudged phase through its "
                        "transposed read (intermediate error signals; docs/model.md). Empty: "
                        "no heads.", p_list(p_int(lo=1, hi=MAX_LAYERS)))
    beta: Any = key(0.1, "Nudge gain of each head (one value or one per head); 0 makes the "
                    "heads read-only (the network is then bit-identical to one without heads).",
                    p_scalar_or_list(p_float(lo=0.0, hi=MAX_GAIN)))
    target: str = key("label", "What the heads are nudged toward: label (local error "
                      "signals), or kd_logits ((1 - kd_mix) y + kd_mix softmax(z_teacher / "
                      "kd_tau) from the teacher's logits, computed once per batch), or "
                      "kd_features (hints: a learned linear map of the layer nudged toward the "
                      "teacher's hidden state of the same layer index, no softmax).",
                      p_choice("label", "kd_logits", "kd_features"))
    teacher: str | None = key(None, "For targets kd_logits and kd_features: run directory of the teacher, a "
                              "BP-twin run of the same data (training.algorithm: bp) "
                              "trained first; relative paths are taken from the experiment "
                              "file's folder.", p_optional(p_str()))
    kd_tau: float = key(4.0, "Distillation temperature of the teacher's logits.",
                        p_float(lo=0.0, hi=MAX_GAIN, lo_open=True))
    kd_mix: float = key(0.5, "Weight of the teacher's softened distribution in the target "
                        "(0: labels only, 1: teacher only).", p_float(lo=0.0, hi=1.0))
    bp_weight: Any = key(None, "Weight of each head's cross-entropy in the BP twin's loss (one "
                         "value or one per head); null: beta / training.beta_f.",
                         p_optional(p_scalar_or_list(p_float(lo=0.0, hi=MAX_GAIN))))
    seed: int = key(0, "Seed of the heads' own Glorot draw (the main net's draws do not "
                    "change).", p_int(lo=0, hi=MAX_SEED))


@dataclass(frozen=True)
class ConvConfig:
    channels: tuple = key((), "Convolutional FRE-RNN (docs/model.md): output channels of the "
                          "conv layers C1 .. CL, each followed by 2x2 max-pooling and read out "
                          "by a linear layer Wf; empty: the dense net of model.hidden (then "
                          "ignored for conv nets).", p_list(p_int(lo=1, hi=MAX_UNITS),
                                                            max_len=MAX_LAYERS), "channels")
    kernel: Any = key(5, "Kernel size k (k x k, stride 1); one value or one per conv layer.",
                      p_scalar_or_list(p_int(lo=1, hi=64)), "pixels")
    padding: Any = key(0, "Zero padding of each conv's input; one value or one per layer.",
                       p_scalar_or_list(p_int(lo=0, hi=64)), "pixels")
    input_shape: tuple | None = key(None, "Input image [channels, height, width]; null takes "
                                    "it from the data set (mnist, fashion-mnist: [1, 28, 28]; "
                                    "cifar10: [3, 32, 32]); required for synthetic data.",
                                    p_optional(p_list(p_int(lo=1, hi=MAX_UNITS), min_len=3,
                                                      max_len=3)))

    @property
    def enabled(self) -> bool:
        return bool(self.channels)


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple = key((512, 512, 512), "Widths of the hidden layers (the recurrent core).",
                        p_list(p_int(lo=1, hi=MAX_UNITS), min_len=1, max_len=MAX_LAYERS),
                        "units")
    activation: str = key("tanh", "Neuron nonlinearity rho: tanh, or hard_sigmoid = "
                          "clip(x, 0, 1).", p_choice("tanh", "hard_sigmoid"))
    beta_i: Any = key(0.01, "Feedback regulation: gain of every feedback path into hidden "
                      "layer i; one value, or one per hidden layer.",
                      p_scalar_or_list(p_float(lo=0.0, hi=MAX_GAIN)))
    alpha: float = key(1.0, "Forward scale of hidden-to-hidden weights (not W_0, W_f, or "
                       "residual links).", p_float(lo=0.0, hi=MAX_GAIN, lo_open=True))
    feedback: str = key("symmetric", "Feedback matrices: symmetric (B_i = W_i^T, tied) or "
                        "random (Glorot-uniform, fixed).", p_choice("symmetric", "random"))
    residual: ResidualConfig = section(ResidualConfig, "Residual / AGT skip links.")
    bias: bool = key(False, "Learn a bias per hidden and output unit (conv nets always "
                     "learn biases: one per channel and output unit).", p_bool())
    aux: AuxConfig = section(AuxConfig, "Auxiliary heads (intermediate error signals, "
                             "knowledge distillation).")
    conv: ConvConfig = section(ConvConfig, "Convolutional layers (Conv 32c-64c and the like).")


@dataclass(frozen=True)
class TrainingConfig:
    algorithm: str = key("ep", "ep (Equilibrium Propagation on the FRE-RNN) or bp "
                         "(backpropagation through the equivalent feed-forward net).",
                         p_choice("ep", "bp"))
    epochs: int = key(50, "Training epochs.", p_int(lo=1, hi=MAX_STEPS))
    batch_size: int = key(500, "Minibatch size (reshuffled every epoch).",
                          p_int(lo=1, hi=MAX_SAMPLES),
                          "samples")
    optimizer: str = key("adam", "adam or sgd.", p_choice("adam", "sgd"))
    lr: Any = key(1.0e-3, "Learning rate; one value, or one per weight matrix "
                  "(W_0 .. W_{L-1}, W_f: L+1 values; a residual link uses the value of the "
                  "matrix entering the same layer; 0 freezes a matrix).",
                  p_scalar_or_list(p_float(lo=0.0, hi=MAX_GAIN)))
    momentum: float = key(0.0, "SGD momentum.", p_float(lo=0.0, hi=1.0, hi_open=True))
    adam_beta1: float = key(0.9, "Adam first-moment decay (1 would divide by zero in the bias "
                            "correction).", p_float(lo=0.0, hi=1.0, hi_open=True))
    adam_beta2: float = key(0.999, "Adam second-moment decay.",
                            p_float(lo=0.0, hi=1.0, hi_open=True))
    adam_eps: float = key(1.0e-8, "Adam epsilon (at least 1e-12: smaller values vanish in "
                          "float32 and an unvisited weight divides 0 by 0).",
                          p_float(lo=1.0e-12, hi=1.0))
    T: int = key(18, "Free-phase length (steps of the discrete map; units of tau for ODE "
                 "settling). Must be >= the number of hidden layers.",
                 p_int(lo=1, hi=MAX_STEPS), "steps")
    K: int = key(10, "Nudged-phase length.", p_int(lo=1, hi=MAX_STEPS), "steps")
    beta_f: float = key(0.1, "Nudge strength on the top hidden layer.",
                        p_float(lo=0.0, hi=MAX_GAIN, lo_open=True))
    nudge_error: str = key("recomputed", "Output error during the nudged phase: recomputed "
                           "every step (paper, Algorithm 1); frozen at the free-phase value "
                           "e0 (authors' layered code); or cumulative, k e0 at nudged step k "
                           "(authors' residual/AGT graph code, docs/model.md).",
                           p_choice("recomputed", "frozen", "cumulative"))
    readout_error: str = key("free", "Error the readout (Wf) update uses: free (y - p of the "
                             "free phase) or nudged (y - p at the end of the nudged phase, "
                             "as the authors' graph code).", p_choice("free", "nudged"))
    nudging: str = key("one_sided", "one_sided (nudged phase at +beta_f) or centered (phases "
                       "at +beta_f and -beta_f, update from their difference / 2: no O(beta_f) "
                       "bias; one more nudged phase per batch).",
                       p_choice("one_sided", "centered"))
    update_norm: str = key("raw", "EP update scaling: raw, or normalised (divide each "
                           "layer's update by the gain of the strongest path from any nudge "
                           "source: feedback hops beta / alpha, forward hops alpha, "
                           "docs/model.md).",
                           p_choice("raw", "normalised"))
    dtype: str = key("float32", "Floating-point type of states and weights.",
                     p_choice("float32", "float64"))
    seed: int = key(0, "Seed of the run's random generator (init, shuffling).",
                    p_int(lo=0, hi=MAX_SEED))
    eval_batch_size: int = key(1000, "Batch size for test/validation inference.",
                               p_int(lo=1, hi=MAX_SAMPLES),
                               "samples")
    weight_decay: float = key(0.0, "Weight decay of every digital parameter: decoupled "
                              "(AdamW: w -= lr wd w each step) with adam, L2 (wd w added to "
                              "the gradient) with sgd.", p_float(lo=0.0, hi=1.0), "1/step")
    lr_schedule: str = key("constant", "Learning-rate schedule, set per epoch: constant, or "
                           "cosine (from lr at epoch 1 to lr_min after schedule_epochs, like "
                           "PyTorch's CosineAnnealingLR stepped once per epoch).",
                           p_choice("constant", "cosine"))
    lr_min: float = key(1.0e-6, "Cosine schedule: final learning rate.",
                        p_float(lo=0.0, hi=MAX_GAIN))
    schedule_epochs: int | None = key(None, "Cosine schedule: its period in epochs (null: "
                                      "training.epochs).", p_optional(p_int(lo=1, hi=MAX_STEPS)),
                                      "epochs")
    grad_clip_norm: float | None = key(None, "Conv nets: scale each batch's digital updates "
                                       "down to this global L2 norm when above it (PyTorch "
                                       "clip_grad_norm_); null: no clipping.",
                                       p_optional(p_float(lo=0.0, hi=1.0e9, lo_open=True)))


@dataclass(frozen=True)
class SettlingConfig:
    mode: str = key("discrete", "discrete (the paper's synchronous map) or ode (integrate "
                    "tau ds/dt = -s + rho(h) with `method`).", p_choice("discrete", "ode"))
    method: str = key("euler", "ODE integrator: euler (fixed step; dt = tau is exactly the "
                      "discrete map), heun (fixed step, 2nd order, two reads per step) or "
                      "adaptive (Heun-Euler pair with step-size control to `atol`).",
                      p_choice("euler", "heun", "adaptive"))
    dt_over_tau: float = key(1.0, "ODE step (initial step for adaptive) in units of the "
                             "neuron time constant; 1 with euler equals the discrete map. "
                             "Phases last T and K tau.",
                             p_float(lo=1.0e-4, hi=1.0), "tau")
    dt_max_over_tau: float = key(1.0, "Adaptive: largest step.", p_float(lo=1.0e-4, hi=2.0),
                               "tau")
    atol: float = key(1.0e-4, "Adaptive: local error bound per step (max over neurons); at "
                      "least 1e-6 with float32, 1e-8 with float64: below, rounding noise "
                      "exceeds the bound or the steps (about 1/sqrt(atol) per tau) become "
                      "countless.",
                      p_float(lo=MIN_ATOL["float64"], hi=1.0), "state units")
    tau_s: float = key(1.0e-7, "Neuron time constant tau = R C of the neuron nodes; turns "
                       "settling times into seconds.", p_float(lo=1.0e-15, hi=1.0e3), "s")
    early_stop: bool = key(False, "Stop a phase early once the largest state change per "
                           "tau falls below `tolerance`.", p_bool())
    tolerance: float = key(1.0e-6, "Convergence tolerance on max |ds| per tau.",
                           p_float(lo=0.0, hi=1.0e3, lo_open=True), "state units")
    average_last: int = key(1, "States the update uses: averaged over the last N steps of "
                            "each phase (1: the final state); N-fold less read-noise variance "
                            "near the fixed point, no extra reads (fixed-step methods only).",
                            p_int(lo=1, hi=MAX_STEPS), "steps")
    max_steps: int | None = key(None, "Cap on integration steps per phase (null: no cap "
                                "beyond T, K).", p_optional(p_int(lo=1, hi=MAX_STEPS)), "steps")


@dataclass(frozen=True)
class PulseUpdateConfig:
    scheme: str = key("deterministic", "deterministic (pulse counts with stochastic rounding "
                      "and a cap), stochastic (pulse coincidence of bit streams of length bl), "
                      "mixed_precision (digital accumulator per device, Nandakumar 2020), "
                      "tiki_taka (TTv2, Gokmen 2021) or chopped_tiki_taka (c-TTv2, Rasch 2023); "
                      "docs/crossbar.md.",
                      p_choice("deterministic", "stochastic", "mixed_precision", "tiki_taka",
                               "chopped_tiki_taka"))
    lr: Any = key(None, "Pulse gain (the hardware learning rate), one value or one per weight "
                  "matrix like training.lr; null uses training.lr.",
                  p_optional(p_scalar_or_list(p_float(lo=0.0, hi=MAX_GAIN))))
    normalise: bool | None = key(None, "Divide the arrays' updates by the path gain of "
                                 "their layer (training.update_norm) so deep layers still learn; null follows "
                                 "training.update_norm (true/false override it for the "
                                 "crossbar arrays only).", p_optional(p_bool()))
    max_pulses: int | None = key(31, "Deterministic scheme: cap on pulses per device per "
                                 "update; null for no cap.", p_optional(p_int(lo=1, hi=MAX_STEPS)),
                                 "pulses")
    bl: int = key(31, "Stochastic scheme: bit-stream length per sample.",
                  p_int(lo=1, hi=10_000), "slots")
    update_management: bool = key(True, "Stochastic scheme: balance the row and column "
                                  "probabilities by sqrt(max|delta| / max|x|).", p_bool())
    transfer_every: int = key(1, "Tiki-Taka: updates between read-outs of the fast array.",
                              p_int(lo=1, hi=MAX_STEPS), "updates")
    transfer_columns: int = key(1, "Tiki-Taka: fast-array columns (input lines) read out "
                                "per transfer, in turn.", p_int(lo=1, hi=MAX_STEPS), "columns")
    transfer_lr: float = key(1.0, "Tiki-Taka: gain from the fast array's read-out into the "
                             "digital buffer.", p_float(lo=0.0, hi=MAX_GAIN, lo_open=True))
    transfer_max_pulses: int = key(1, "Tiki-Taka: cap on pulses per slow device per transfer.",
                                   p_int(lo=1, hi=MAX_STEPS), "pulses")
    chop_prob: float = key(0.1, "Chopped Tiki-Taka: probability that a column's chopper sign "
                           "flips after its read-out.", p_float(lo=0.0, hi=1.0))


@dataclass(frozen=True)
class CrossbarConfig:
    enabled: bool = key(False, "Store weight matrices on resistive crossbar arrays.", p_bool())
    device: str | None = key(None, "Device card (YAML). Relative paths: from the experiment "
                             "file's folder, else from the working directory.",
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
    weight_range_factor: float = key(2.0, "Per-layer weight-to-conductance scale: the full "
                                     "conductance swing equals this factor times the largest "
                                     "initial |W|.", p_float(lo=1.0, hi=MAX_GAIN))
    seed: int = key(12345, "Seed of the devices' variation, faults and noise.",
                    p_int(lo=0, hi=MAX_SEED))
    time_per_batch_s: float | None = key(
        None, "Simulated time one training batch takes on the devices' clocks (drift acts on "
        "the reads as it passes). null computes it: (training.T + training.K) x settling.tau_s "
        "for the two settling phases, plus the update's pulse slots x the card's pulse_width_s "
        "(deterministic: update.max_pulses, or the card's number of states without a cap; "
        "stochastic: batch_size x update.bl; none for exact-update cards).",
        p_optional(p_float(lo=0.0, hi=1.0e9)), "s")
    drift_compensation: str = key(
        "none", "Drift compensation in the periphery (docs/devices.md): none; global (one "
        "digital output gain per matrix, the ratio of a calibration read's column-current sum "
        "as written to now); column (one gain per output column).",
        p_choice("none", "global", "column"))
    periphery: Periphery = section(Periphery, "DAC, ADC and read noise.")
    wires: WireSettings = section(WireSettings, "Wire, driver and sense resistances of every "
                                 "tile (IR drop by exact nodal analysis in every read).")
    iv: IVLaw = section(IVLaw, "Device current-voltage law of the reads.")
    update: PulseUpdateConfig = section(PulseUpdateConfig, "In-situ updates by pulses.")


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
        return {"cifar10": (3, 32, 32)}.get(self.data.dataset, (1, 28, 28))

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
        fields = {f.name: f for f in _keys(cls)}
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
    _check_cross_fields(cfg)
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
    """Read, override and validate an experiment file."""
    raw = read_yaml(path)
    if overrides:
        if not isinstance(raw, dict):
            raw = {}
        raw = apply_overrides(raw, overrides, check_keys=True)
    cfg = config_from_dict(raw, source=path)
    base = os.path.dirname(os.path.abspath(path))
    d = cfg.data
    if d.dir is not None and not os.path.isabs(d.dir):
        cfg = replace(cfg, data=replace(d, dir=os.path.normpath(os.path.join(base, d.dir))))
    aux = cfg.model.aux
    if aux.teacher is not None and not os.path.isabs(aux.teacher):
        teacher = os.path.normpath(os.path.join(base, aux.teacher))
        cfg = replace(cfg, model=replace(cfg.model, aux=replace(aux, teacher=teacher)))
    dev = cfg.crossbar.device
    if dev is not None and not os.path.isabs(dev):
        # from the experiment's folder, the working directory, or the folder above experiments/
        tries = [os.path.join(base, dev), dev, os.path.join(base, os.pardir, dev)]
        here = next((os.path.abspath(t) for t in tries if os.path.exists(t)),
                    os.path.abspath(tries[0]))
        cfg = replace(cfg, crossbar=replace(cfg.crossbar, device=here))
    return cfg


def dump_config(cfg: Config, path: str) -> None:
    """Write the fully resolved config (every key, defaults filled in) as YAML."""
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)

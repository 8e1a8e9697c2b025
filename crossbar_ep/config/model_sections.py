"""Config sections of the data and the model (``data``, ``model`` with ``model.residual``,
``model.aux`` and ``model.conv``): frozen dataclasses whose field metadata is the schema
(units, ranges, documentation); :mod:`crossbar_ep.config.experiment` assembles them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crossbar_ep.model.activations import ACTIVATIONS
from crossbar_ep.schema import (
    MAX_GAIN,
    MAX_LAYERS,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_UNITS,
    key,
    p_bool,
    p_choice,
    p_float,
    p_int,
    p_list,
    p_optional,
    p_scalar_or_list,
    p_str,
    section,
)

DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "synthetic")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = key("mnist", "Data set: mnist, fashion-mnist, cifar10 / cifar100 (the "
                       "python-pickle folders cifar-10-batches-py / cifar-100-python, "
                       "supplied by the user: docs/data.md), or "
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
                        "transposed read (intermediate error signals; docs/model.md); on a "
                        "conv net, conv layers, each head reading the layer's pooled map "
                        "(label targets only). Empty: no heads.",
                        p_list(p_int(lo=1, hi=MAX_LAYERS)))
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
    activation: str = key("tanh", "Neuron nonlinearity rho: tanh, hard_sigmoid = "
                          "clip(x, 0, 1), or shifted_sigmoid = 1 / (1 + exp(-4 (x - 1/2))) "
                          "(prior discrete-time EP).", p_choice(*ACTIVATIONS))
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

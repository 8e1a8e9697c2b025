"""Options of the settle engine and the learners: the ``training`` and ``settling`` config
sections.  Each is a frozen dataclass whose fields carry their unit, range and documentation
(``docs/config.md`` is generated from them); the engine and the learners take them whole, so a
config file and the Python API build the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crossbar_ep.schema import (
    MAX_GAIN,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_STEPS,
    MIN_ATOL,
    key,
    p_bool,
    p_choice,
    p_float,
    p_int,
    p_optional,
    p_scalar_or_list,
    p_str,
)


@dataclass(frozen=True)
class TrainingConfig:
    algorithm: str = key("ep", "ep (Equilibrium Propagation on the FRE-RNN), bp "
                         "(backpropagation through the equivalent feed-forward net) or fa "
                         "(feedback alignment: bp with the errors sent back through the "
                         "net's fixed random feedback matrices; needs model.feedback: "
                         "random).", p_choice("ep", "bp", "fa"))
    epochs: int = key(50, "Training epochs.", p_int(lo=1, hi=MAX_STEPS))
    batch_size: int = key(500, "Minibatch size (reshuffled every epoch).",
                          p_int(lo=1, hi=MAX_SAMPLES),
                          "samples")
    optimizer: str = key("adam", "adam or sgd.", p_choice("adam", "sgd"))
    lr: Any = key(1.0e-3, "Learning rate; one value, or one per weight matrix "
                  "(W_0 .. W_{L-1}, W_f: L+1 values; a residual link uses the value of the "
                  "matrix entering the same layer; 0 freezes a matrix).",
                  p_scalar_or_list(p_float(lo=0.0, hi=MAX_GAIN)))
    momentum: float = key(0.0, "SGD momentum of the digital parameters (weights on "
                          "crossbar arrays change by their pulse rule; the mixed-precision "
                          "rule has its own crossbar.update.momentum).",
                          p_float(lo=0.0, hi=1.0, hi_open=True))
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
                              "the gradient) with sgd.  Weights on crossbar arrays change only by their pulse rule "
                              "and do not decay (their biases, which stay digital, do).",
                              p_float(lo=0.0, hi=1.0), "1/step")
    lr_schedule: str = key("constant", "Learning-rate schedule, set per epoch: constant, or "
                           "cosine (from lr at epoch 1 to lr_min after schedule_epochs, like "
                           "PyTorch's CosineAnnealingLR stepped once per epoch); on "
                           "crossbar arrays it scales the pulse gain the same way.",
                           p_choice("constant", "cosine"))
    lr_min: float = key(1.0e-6, "Cosine schedule: final learning rate.",
                        p_float(lo=0.0, hi=MAX_GAIN))
    schedule_epochs: int | None = key(None, "Cosine schedule: its period in epochs (null: "
                                      "training.epochs).", p_optional(p_int(lo=1, hi=MAX_STEPS)),
                                      "epochs")
    weight_noise_add: float = key(0.0, "Hardware-aware training: std of additive weight "
                                  "noise in each batch's phases, as a fraction of each "
                                  "matrix's max |W| (updates go to the clean weights).",
                                  p_float(lo=0.0, hi=10.0))
    weight_noise_mul: float = key(0.0, "Hardware-aware training: std of multiplicative "
                                  "weight noise in each batch's phases, relative to |W|.",
                                  p_float(lo=0.0, hi=10.0))
    weight_noise_card: str | None = key(None, "Hardware-aware training: a device card "
                                        "(name or file) whose programming noise is injected "
                                        "into each batch's phases, mapped to weights through "
                                        "differential pairs at crossbar.weight_range_factor; "
                                        "null: none.", p_optional(p_str()))
    weight_noise_scale: float = key(1.0, "Multiple of the card's programming noise injected "
                                    "(weight_noise_card).", p_float(lo=0.0, hi=100.0))
    grad_clip_norm: float | None = key(None, "Scale each batch's digital updates "
                                       "down to this global L2 norm when above it (PyTorch "
                                       "clip_grad_norm_); null: no clipping.",
                                       p_optional(p_float(lo=0.0, hi=1.0e9, lo_open=True)))
    memory_limit_gib: float | None = key(
        None, "Memory a run may use at its peak; the run is refused before anything is "
        "allocated when its estimated peak (data, network state, update temporaries, batch "
        "states: docs/limits.md) is larger.  null: the memory available on the machine that "
        "trains when the run starts (MemAvailable, or a cgroup's limit); a number: that many "
        "GiB instead (a cluster node that has the memory); 0: no check.  Changes no result.",
        p_optional(p_float(lo=0.0, hi=1.0e6)), "GiB")


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
    tolerance: float = key(1.0e-6, "Convergence tolerance on max |ds| per tau (state units; "
                           "a fraction of each layer's nudge gain with tolerance_mode "
                           "relative).", p_float(lo=0.0, hi=1.0e3, lo_open=True), "state units")
    tolerance_mode: str = key("absolute", "Early stop rule: absolute (max |ds| per tau below "
                              "tolerance) or relative (every layer's max |ds| per tau below "
                              "tolerance x the gain with which the nudge reaches it, beta_f "
                              "beta_i^hops on a chain, in both phases; nudged phases run one "
                              "step per layer at least): deep layers, whose EP signal is far "
                              "below any absolute tolerance, settle too (docs/model.md). "
                              "Fixed-step methods only.", p_choice("absolute", "relative"))
    average_last: int = key(1, "States the update uses: averaged over the last N steps of "
                            "each phase (1: the final state); N-fold less read-noise variance "
                            "near the fixed point, no extra reads (fixed-step methods only).",
                            p_int(lo=1, hi=MAX_STEPS), "steps")
    readout_reads: int = key(1, "Reads of each readout array at the end of a phase, whose "
                             "outputs are averaged before the softmax (an integrating sense "
                             "amplifier): the probabilities p, and so the output error y - p "
                             "of the readout's update and of the first nudged step, carry "
                             "1/N of one read's noise variance; N - 1 extra reads of the "
                             "readout per phase.", p_int(lo=1, hi=1000), "reads")
    solver: str = key("plain", "Fixed-point solver of the discrete map: plain (iterate s <- "
                      "f(s)) or anderson (Anderson acceleration over the last anderson_depth "
                      "iterates, per sample; same cost per step: one read of every array). "
                      "With early_stop it reaches the tolerance in fewer steps; discrete mode, "
                      "recomputed or frozen nudge errors, no phase averaging.",
                      p_choice("plain", "anderson"))
    anderson_depth: int = key(5, "Anderson: iterates mixed per step.", p_int(lo=1, hi=50),
                              "steps")
    anderson_beta: float = key(1.0, "Anderson: mixing of the residual into each step (1: the "
                               "undamped step, fewest steps on weakly coupled nets; 0.5 is "
                               "steadier on strongly coupled ones).",
                               p_float(lo=0.0, hi=1.0, lo_open=True))
    max_steps: int | None = key(None, "Cap on integration steps per phase (null: no cap "
                                "beyond T, K).", p_optional(p_int(lo=1, hi=MAX_STEPS)), "steps")

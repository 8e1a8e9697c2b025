"""Generate ``docs/config.md`` (config reference) and ``docs/devices.md`` (device-card
reference) from the schemas.

    python -m crossbar_ep.config.docs            # rewrite both
    python -m crossbar_ep.config.docs --check    # exit 1 if either is out of date
"""

from __future__ import annotations

import dataclasses
import os
import sys

from crossbar_ep.config.experiment import Config
from crossbar_ep.schema import reference_rows

HEADER = """# Experiment config reference

Generated from `crossbar_ep/config/experiment.py` by `python -m crossbar_ep.config.docs`; do not edit by hand.

An experiment file is YAML with the sections below; every key is optional and takes the
default shown.  Unknown keys, wrong types, out-of-range values and inconsistent combinations
are rejected with the file name and key path, e.g.
`experiments/x.yaml: model.hidden[2]: must be >= 1, got -3`.  Override any key on the command
line with `--set section.key=value` (the value is parsed as YAML: `--set model.hidden=[64,64]`).

Cross-field rules: `training.T` >= number of hidden layers; a per-layer `model.beta_i` has one
value per hidden layer and a per-matrix `training.lr` has L+1 (W_0 .. W_{L-1}, W_f); residual
pairs lie inside 1..L, go upward (from < to) and skip at least one layer; `every-3` needs
L >= 4; `agt` needs `model.feedback: random`; `settling.dt_over_tau` only with `mode: ode`;
`update_norm: normalised` needs every beta_i > 0.
"""


def render() -> str:
    out = [HEADER]
    for f in dataclasses.fields(Config):
        if "section" not in f.metadata:
            continue
        out.append(f"\n## `{f.name}`: {f.metadata['doc']}\n")
        out.append("| key | type | default | unit | meaning |")
        out.append("|---|---|---|---|---|")
        for k, t, d, u, doc in reference_rows(f.metadata["section"], f.name + "."):
            out.append(f"| `{k}` | {t} | `{d}` | {u} | {doc} |")
    top = [r for r in reference_rows(Config) if "." not in r[0]]
    out.append("\n## Top-level keys\n")
    out.append("| key | type | default | unit | meaning |")
    out.append("|---|---|---|---|---|")
    for k, t, d, u, doc in top:
        out.append(f"| `{k}` | {t} | `{d}` | {u} | {doc} |")
    return "\n".join(out) + "\n"


DEVICE_HEADER = """# Device-card reference

Generated from `crossbar_ep/devices/card.py` and the model registry (`crossbar_ep/devices/`) by
`python -m crossbar_ep.config.docs`; do not edit by hand.

A device card (`device_models/*.yaml`) describes one resistive device type.  Units: conductances
in siemens, resistances in ohm, times in seconds; model parameters are in normalised state units
`w` on [w_min, w_max], mapped linearly to conductance:
`G = G_min + (w - w_min) / (w_max - w_min) * (G_max - G_min)`.  Parameter names follow IBM
aihwkit, so published fits port one to one.  `crossbar-ep device info CARD` prints a card with
units, number of states and citation; `crossbar-ep device plot CARD` draws its pulse response.

A card is rejected, with the file and key named, when the model is unknown, a required value is
missing, a value is negative where it cannot be or outside its physical range (the `range`
columns below), G_min >= G_max, w_min >= w_max, or a parameter is given that the model does not
use.

Common to the step models: each device draws, once, `dw_up = dw_min (1 + b + dw_min_dtod xi)`,
`dw_down = dw_min (1 - b + dw_min_dtod xi)` with `b = up_down + up_down_dtod xi'`, and its own
bounds `w_max (1 + w_max_dtod xi)`, `w_min (1 + w_min_dtod xi)`.  Every pulse's step is scaled
by `(1 + dw_min_std xi)` (fresh xi per pulse), then the state is clipped to the device's bounds.
Number of states: `(w_max - w_min) / dw_min` (`p_max` for soft_bounds_pmax).

### Conventions of the fits (`conventions`)

The published fits these cards port (IBM aihwkit's presets) were made with slightly different
forms of the equations than the plain ones above; a card says which it was fitted with, and the
ported cards do (the defaults keep the plain forms):

| key | default | the fits' form |
|---|---|---|
| `up_down` | `symmetric`: `dw_up = dw_min (1 + b)`, `dw_down = dw_min (1 - b)` | `larger_is_dw_min`: the larger step is dw_min, only the other shrinks by abs(b): `dw_up = dw_min (1 + min(b, 0) + dw_min_dtod xi)`, `dw_down = dw_min (1 - max(b, 0) + dw_min_dtod xi)`; the same for pow_step's exponents, `gamma^+ = pow_gamma (1 + min(pow_up_down, 0))`, `gamma^- = pow_gamma (1 - max(pow_up_down, 0))` |
| `slope_bound` | `device`: linear_step's slope divides by each device's drawn bound | `nominal`: by the card's `w_max` (up) / `w_min` (down) |
| `exp_range` | `card`: exp_step's `z = 2 a w / (w_max - w_min) + b` with the card's range | `device`: with each device's own drawn range |

For `reram_gong2018_exp.yaml` (up_down 0.259) the up/down step ratio is 1 / (1 - 0.259) = 1.35
with `larger_is_dw_min` and 1.259 / 0.741 = 1.70 with `symmetric`; after 200 SET pulses from
w = 0 the nominal device sits at w = 0.289 (214 dw_min) with the fit's form against 0.362
(268 dw_min) with `symmetric`: 54 dw_min, 3.7 % of the range, apart.
The two smaller differences, over 2000 devices drawn from the card (cycle noise off) after 200
pulses from w = 0: `slope_bound` on Li-ECRAM moves the states by 0.15 dw_min on average for SET
trains and 0.84 for RESET trains (at most 5.6 dw_min); `exp_range` on the ReRAM card by 0.77 and
5.5 dw_min (at most 42 dw_min, 2.8 % of the range).
`ecram_*`, `capacitor_li2018`, `reram_gong2018_*` and `pcm_nandakumar2020.yaml` (`exp_range`
only: its up_down is 0) set the fits' forms; the RPU and NeuroSim cards keep the defaults.

Every model is a class in the model registry (`crossbar_ep/devices/`); the table below and the
parameter sections are generated from it.
"""

DEVICE_CLOCK = """
## The devices' clock and drift

Every device array has a clock, `t_now` (s of simulated time).  Pulses and programming stamp
the time each device was written; reads see the card's power-law drift for the time since,
`G(t) = G_written ((t_now - t_written + t0_s) / t0_s) ^ -nu`.  During training every update of
a crossbar matrix (one per training batch) advances its arrays' clocks by the time of one batch,
`crossbar.time_per_batch_s`; by default (null) that is computed from the physics:

    (training.T + training.K) * settling.tau_s  +  pulse slots * pulse_width_s

the settling phases (T and K steps of one neuron time constant each; two nudged phases of K with
centered nudging) plus the update's pulse time: `crossbar.update.max_pulses` slots for
deterministic pulses and mixed precision (the card's number of states without a cap),
`batch_size * bl` for stochastic coincidence, none for exact-update cards; Tiki-Taka adds its
transfers (`transfer_columns` reads of `periphery.t_read_s` and `transfer_max_pulses` pulse
slots every `transfer_every` batches).
At the defaults (T 18, K 10, tau 100 ns, 31 pulses of 100 ns) a batch takes 5.9 us, so drift
over a training run is tiny unless `time_per_batch_s` is set to a realistic chip-level time
(data movement and digital work included).  Evaluation reads do not advance the clock.  The
clock is part of the crossbar state (`CrossbarMatrix.state_dict()`: `pos:t_now`, `neg:t_now`).

**Drift compensation** (`crossbar.drift_compensation`, or `cx.attach_crossbar(...,
drift_compensation=...)`), as analog inference chips do it (global drift compensation, Joshi et
al., Nat. Commun. 11, 2473 (2020)): a calibration read drives the array's rows with 16 stored
reference inputs (rows 1 to 16 of a Walsh-Hadamard matrix, entries +-input_range) through the
normal read path (DAC, read noise, ADC) and sums each output line's response magnitudes,
`c_j = sum_k |r_kj|`.  The periphery records `c_j` right after programming and reads it again
whenever the devices' clock has moved; the digital outputs are scaled by `global`, one gain per
matrix, `sum_j c_ref_j / sum_j c_now_j`; `column`, one per output line, `c_ref_j / c_now_j`;
`none` (default).  Only what the reads measure enters the gain: devices rewritten since the
reference count like drift (`CrossbarMatrix.calibrate()` records a new reference; programming
does it).  The calibration reads cost energy and conversions like any read, and the epoch
metrics count them (`calibration_reads_total`, input vectors).  With one drift exponent for
every device of a differential pair the compensation is exact; a spread of nu leaves a residual
(test: nu 0.1 +- 0.03 after 400 s, t0 20 s).

## Device laws

Programming noise, drift and device read noise are laws named in the card's sections
`programming_noise`, `drift` and `read_noise` with their parameters; each is a class in
`crossbar_ep/devices/laws.py` (a new law is one class registered with `register_law` plus a
test against its closed form).  Programming adds Gaussian noise of std `sigma(G_target)` to
each target (initial programming, `CrossbarMatrix.program`); drift scales each device's
conductance by `((t - t_written + t0_s) / t0_s)^-nu` with `nu = abs(mu + sigma xi)`, xi drawn
once per device; device read noise adds `sigma xi'` to the drifted conductance, xi' redrawn
each time the clock moves and frozen over the reads made at one time.  `x = G / 25 uS` in the
PCM laws.  `pcm_joshi2020_inference.yaml` carries the three `pcm_joshi2020` laws (the published
PCM inference model, a programming-and-retention card: its devices take exact updates); its
test (`tests/test_pcm_inference.py`) holds the mean and standard deviation of G(t) at 0, 1 s,
1 h, 1 d, 1 month and 1 year for targets 1 to 25 uS (150,000 devices each) within 1 % and 3 %
of a NumPy sampler of the formulas.  `CrossbarMatrix.program(W, rng)` writes weights through
these laws, `advance_to(t_s)` moves the clock to a time after programming (retention:
[retention.md](retention.md)).

{law_table}

## Adding a device model

One class, registered with a decorator, plus a card: nothing else changes.

```python
from crossbar_ep.devices import StepModel, register

@register
class HalvingStep(StepModel):          # dw_min, w_min, w_max, up_down, ... from StepModel
    name = "halving_step"              # the card's `model:`
    summary = "`d dw^d / 2`"           # its row in the table above

    @staticmethod
    def step(w, d, wmin, wmax, p, c):  # p: this device's dw_up, dw_dn (+ draw_shape columns)
        return (0.5 * p[0] if d > 0 else -0.5 * p[1]), 0.0
```

`step` is plain Python over scalars and 1-D arrays, returning (state change of one pulse,
std of additive noise or 0); the Numba pulse kernel compiles it, and tests run the same
function un-jitted (`pulse_reference`).  A model with its own parameters sets `params`
(name -> `Param(default or REQUIRED, unit, meaning, kind)`), draws its per-device columns in
`draw` / `draw_shape` and its card-wide numbers in `constants` (see `crossbar_ep/devices/`).
The module defining the class must be imported before the card is loaded.
"""


def _law_table() -> str:
    """The registered device laws: section, name, closed form, parameters."""
    from crossbar_ep.devices.laws import LAWS
    from crossbar_ep.devices.registry import REQUIRED
    rows = ["| section | law | closed form | parameters |", "|---|---|---|---|"]
    for kind, laws in LAWS.items():
        for name, cls in laws.items():
            params = ", ".join(f"`{k}` ({p.unit}, default "
                               f"{'required' if p.default is REQUIRED else f'{p.default:g}'})"
                               for k, p in cls.params.items()) or "none"
            rows.append(f"| `{kind}` | `{name}` | {cls.summary} | {params} |")
    return "\n".join(rows)


def render_devices() -> str:
    from crossbar_ep.devices import model_class, model_names
    from crossbar_ep.devices.card import (
        DRIFT_KEYS,
        FAULT_KEYS,
        PROG_KEYS,
        RANGES,
        READ_NOISE_KEYS,
        REQUIRED,
        TOP,
    )

    def rng(k):
        if k not in RANGES:
            return ""
        lo, hi, unit = RANGES[k]
        return f"{lo:g} to {hi:g}" + ("" if unit == "-" else f" {unit}")
    out = [DEVICE_HEADER, "| model | state change per pulse (d = +1 SET, -1 RESET) |",
           "|---|---|"]
    out += [f"| {m} | {model_class(m).summary} |" for m in model_names()]
    from crossbar_ep.devices.guide import your_own_device
    out += [DEVICE_CLOCK.replace("{law_table}", _law_table()), your_own_device(),
            "## Top-level keys\n", "| key | range | meaning |", "|---|---|---|"]
    out += [f"| `{k}` | {rng(k)} | {v} |" for k, v in TOP.items()]
    for title, keys in (("faults", FAULT_KEYS), ("drift", DRIFT_KEYS),
                        ("programming_noise", PROG_KEYS), ("read_noise", READ_NOISE_KEYS)):
        out += [f"\n### `{title}`\n", "| key | range | meaning |", "|---|---|---|"]
        out += [f"| `{k}` | {'0 to 1' if title == 'faults' else rng(k)} | {v} |"
                for k, v in keys.items()]
    for model in model_names():
        spec = model_class(model).params
        out.append(f"\n## `params` of model `{model}`\n")
        if not spec:
            out.append("No parameters.")
            continue
        out += ["| key | default | unit | range | meaning |", "|---|---|---|---|---|"]
        for k, par in spec.items():
            d = "required" if par.default is REQUIRED else f"`{par.default:g}`"
            out.append(f"| `{k}` | {d} | {par.unit} | {par.range_text} | {par.doc} |")
    return "\n".join(out) + "\n"


def main() -> int:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    docs = os.path.join(repo, "docs")
    pages = {"config.md": render(), "devices.md": render_devices()}
    stale = []
    for name, text in pages.items():
        path = os.path.join(docs, name)
        if "--check" in sys.argv:
            try:
                with open(path, encoding="utf-8") as fh:
                    if fh.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}: run python -m crossbar_ep.config.docs")
        return 1
    if "--check" in sys.argv:
        print("docs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

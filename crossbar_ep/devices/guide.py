"""The "Your own device" section of ``docs/devices.md``: measurements to a card (``device
fit``), reading the fit figure, the card in an experiment, aihwkit import and export.  The
CSV columns and the aihwkit field mapping are generated from :mod:`.fit_data` and
:mod:`.aihwkit_io`, so the page follows the code."""

from __future__ import annotations

CSV_COLUMNS = [("pulse", "yes", "pulse index within the cycle: 0 is the read before the first "
                "pulse (optional), then increasing; a gap (reads every k pulses) means k pulses "
                "of the row's sign"),
               ("sign", "yes", "+1 (or SET, up) for potentiation, -1 (RESET, down) for "
                "depression; ignored on a pulse-0 row"),
               ("conductance_S", "one of the two", "conductance after the pulse, siemens"),
               ("conductance_uS", "", "the same in microsiemens"),
               ("device", "no", "device label (default: each file is one device)"),
               ("cycle", "no", "cycle label (default 0); each device and cycle is one sequence")]

INTRO = """
## Your own device

From measured pulse trains to a card, and from and to IBM aihwkit.

    crossbar-ep device trains device_models/ecram_li_tang2018.yaml -o li.csv --devices 10 --cycles 5 --seed 1
    crossbar-ep device fit li.csv --model linear_step -o my_ecram.yaml \\
        --fix w_min=-0.8276 --fix w_max=1.1724 \\
        --convention up_down=larger_is_dw_min --convention slope_bound=nominal \\
        --name "My ECRAM" --source "Lab notebook 7, wafer 3"

The first line makes a stand-in for a measurement (10 Li-ECRAM devices drawn from the card,
5 cycles of 1300 SET then 1300 RESET pulses, read after each); the second fits a card to it
and writes `my_ecram.yaml`, `my_ecram_fit.png` (figure) and `my_ecram_fit.md` (table), in
about 6 s of one core here.  `--model auto` fits every pulsed model and keeps the best.

![fit of 10 Li-ECRAM devices](figures/device_fit_li_ecram.png)

(`device trains` programs each device to mid-range before its first cycle; later cycles start
at the bottom, hence the wide measured band over the first pulses.)

### The measurements (CSV)

One row per conductance read, a header row first (names in any case, columns in any order):

| column | required | meaning |
|---|---|---|
"""

FIT = """
Several files may be given (`device fit a.csv b.csv`); a device's cycles may be spread over
files, a cycle may not appear twice.  Consecutive same-sign pulses of a cycle form a train,
which starts from the read before it.  A malformed file is refused with the file and the row:
a missing column, a pulse index that does not increase, a NaN or non-number, a conductance
outside 0 to 1 S, a sequence with a single read, a gap across a change of sign.

### Fitting a card (`crossbar-ep device fit`, `cx.fit_card`)

- **The state range is a convention.**  A card maps [g_min_S, g_max_S] linearly to
  [w_min, w_max]; the model's equations are written in w, so w_min and w_max fix the units of
  the other parameters (`--fix w_min=... --fix w_max=...`, default -1 and 1).
- **Per-device fits.**  Each device's trains are simulated through the model's own compiled
  step (the pulse kernel's function) and its parameters fitted by least squares
  (`scipy.optimize.least_squares`), each read predicted from the read before it (one pulse
  ahead: unbiased for cycle-to-cycle noise) or each train from its start (`--horizon train`:
  for read noise); `--horizon auto` chooses from the anticorrelation of consecutive read
  differences.  Parameters without a device-to-device spread in the model (exp_step's A and
  gamma, pow_step's pow_up_down, piecewise's nodes, p_max) are then fitted jointly over all
  devices.  Each device's own bounds are fitted where its trains reach or bend towards them.
- **The card.**  The conductance range is the mean of the devices' fitted bounds (or
  `--g-range G_MIN G_MAX`).  Nominal values and spreads are those whose draw by the model
  (the same draw a device array makes) has the mean and covariance of the fitted devices;
  cycle-to-cycle noise comes from the one-pulse residuals, write noise from their
  anticorrelation.  95 % intervals: Student t over the devices for nominal values, chi-square
  for spreads.  `--model auto` ranks the models by BIC (or `--criterion aic`); residuals under
  a thousandth of a step count as exact, so on clean data the simplest exact model wins.
- **Fittable models.**  A model is fittable through its parameter spec alone: `Param(...,
  start=...)` (a number, candidates to try, a list for node lists, or `"step"` / `"states"`
  from the data), `spread_of=` on a spread, `noise=` on a noise parameter, and the physical
  range `lo`, `hi` (the fit's bounds).  Parameters without a start are held (`--fix` sets
  them); `anchor=True` holds a scale while the common parameters are fitted (piecewise's
  dw_min, one product with its nodes).
- **Limits.**  A spread includes each device's estimation error: with noisy data and few
  pulses per device it is an upper estimate (compare the spread with the per-device table and
  its interval).  Bounds need trains that reach or bend towards them; a device that never does
  is left out of the bound's spread and the range falls back to the data's extreme (a note
  says so).  Shapes the data cannot tell apart (a nearly linear exp_step, the curvature of a
  nearly linear soft_bounds_pmax) come with wide intervals.  The recovery tests
  (`tests/test_device_fit.py`) hold every pulsed model to 5 % on nominal values and 20 % on
  spreads for 24 devices with 10 % cycle-to-cycle noise.

The card's `metadata.fit` records each data file's SHA-256, the residual, the intervals, the
AIC and BIC and, with `auto`, the ranking; `--name`, `--source`, `--description` set the
citation fields.

### Reading the fit figure

Left: conductance against pulse number; blue, the measured cycles (median over devices and
cycles, band from the 10th to the 90th percentile); red dashed, 200 devices drawn from the
fitted card, driven through the same pulses from the measured median start.  The medians
should lie on each other and the bands should have the same width: a wider measured band
means spreads the card misses (or a second population of devices), a narrower one spreads
inflated by noise.  Right: the conductance change of each measured pulse against the
conductance before it, SET above zero and RESET below, with the fitted nominal step
(lines): the model's shape should follow the cloud's middle; a systematic bend the line does
not make means another model (try `--model auto`).  The title gives the residual (rms of the
reads against the fit, in S and in % of the range).

### The card in an experiment

A fitted card is a card: `crossbar-ep device info my_ecram.yaml`, `crossbar-ep device plot
my_ecram.yaml`, and in an experiment file

    crossbar:
      enabled: true
      device: my_ecram.yaml

or in Python `cx.attach_crossbar(net, "W1", "my_ecram.yaml")`.  `cx.fit_card(["a.csv"],
"auto", out="card.yaml", source="...")` returns the fit (`.card()`, `.table()`, `.params`,
`.ci`, `.per_device`) and `cx.plot_card_fit(result, "fit.png")` draws the figure.

### aihwkit device settings (`device import-aihwkit`, `device export-aihwkit`)

    crossbar-ep device import-aihwkit my_device.json -o my_device.yaml
    crossbar-ep device export-aihwkit device_models/ecram_li_tang2018.yaml -o ecram.json

The form is JSON: `{"device": <aihwkit class>, "parameters": <its fields>}` and, from an
export, `"crossbar_ep": {...}` for card fields aihwkit has no field for (name, citation,
conductance range, drift, ...).  With aihwkit installed a device `d` gives it by
`json.dump({"device": type(d).__name__, "parameters": dataclasses.asdict(d)}, f, indent=2)`
and takes it back by `getattr(aihwkit.simulator.configs, form["device"])(**form["parameters"])`
(`drift` as a `DriftParameter`).  Export writes every field of the class in aihwkit's order,
so exporting an imported file reproduces it byte for byte, and a card exported and imported
again is the same card.  The mapping:

| aihwkit field | card | note |
|---|---|---|
"""


def your_own_device() -> str:
    """The section's Markdown (for :func:`crossbar_ep.config.docs.render_devices`)."""
    from crossbar_ep.devices.aihwkit_io import MAPPING_DOC
    out = [INTRO.rstrip("\n")]
    out += [f"| `{c}` | {r} | {m} |" for c, r, m in CSV_COLUMNS]
    out.append(FIT.rstrip("\n"))
    out += [f"| {a} | {c} | {n} |" for a, c, n in MAPPING_DOC]
    return "\n".join(out) + "\n"

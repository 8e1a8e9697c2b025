"""``crossbar-ep device fit | trains | import-aihwkit | export-aihwkit``: bring your own device.

- ``fit DATA... -o CARD.yaml``: fit a card to measured pulse trains (CSV), with a figure
  (``CARD_fit.png``) and a parameter table (``CARD_fit.md``);
- ``trains CARD -o DATA.csv``: pulse trains of devices drawn from a card, in the fit's CSV
  format (to try the fit, or to compare a card with measurements);
- ``import-aihwkit FILE -o CARD.yaml`` / ``export-aihwkit CARD -o FILE.json``: IBM aihwkit's
  device settings in their dictionary (JSON) form, both ways.

Hooked into the ``device`` group of :mod:`crossbar_ep.cli` by :func:`add_parsers` and
:func:`run`.
"""

from __future__ import annotations

import os
import sys

from crossbar_ep.errors import CrossbarEPError

COMMANDS = ("fit", "trains", "import-aihwkit", "export-aihwkit")


def add_parsers(dsub) -> None:
    """Add the commands to the ``device`` subparsers."""
    fit = dsub.add_parser("fit", help="fit a device card to measured pulse trains (CSV)",
                          description="Fit a device card to conductance reads after each "
                          "pulse of SET/RESET trains (CSV columns pulse, sign, conductance_S, "
                          "optionally device and cycle; docs/devices.md, Your own device). "
                          "Writes the card, CARD_fit.png and CARD_fit.md.")
    fit.add_argument("data", nargs="+", metavar="DATA.csv")
    fit.add_argument("--model", default="auto",
                     help="a registered pulsed model, or auto: fit every one and keep the "
                     "best by --criterion (default auto)")
    fit.add_argument("-o", "--out", required=True, metavar="CARD.yaml")
    fit.add_argument("--name", help="the card's name")
    fit.add_argument("--source", help="the card's citation (your measurement's reference)")
    fit.add_argument("--description", help="free text for the card")
    fit.add_argument("--fix", action="append", default=[], metavar="KEY=VALUE",
                     help="hold a parameter (repeatable); w_min / w_max set the state range "
                     "(default -1, 1)")
    fit.add_argument("--convention", action="append", default=[], metavar="KEY=VALUE",
                     help="a card convention the fit assumes (up_down, slope_bound, "
                     "exp_range; docs/devices.md)")
    fit.add_argument("--g-range", nargs=2, type=float, metavar=("G_MIN_S", "G_MAX_S"),
                     help="the card's conductance range instead of the devices' fitted bounds")
    fit.add_argument("--criterion", choices=("bic", "aic"), default="bic")
    fit.add_argument("--horizon", default="auto", metavar="auto|train|N",
                     help="reads predicted from the measured read before them: 1 (one pulse, "
                     "for cycle-to-cycle noise), train (whole trains, for read noise) or auto "
                     "(chosen from the data; default)")
    fit.add_argument("--figure", metavar="PNG", help="default CARD_fit.png")
    fit.add_argument("--table", metavar="MD", help="default CARD_fit.md")
    fit.add_argument("--quiet", action="store_true")
    tr = dsub.add_parser("trains", help="write pulse trains of devices drawn from a card (CSV)",
                         description="SET then RESET trains of devices drawn from a card "
                         "(device-to-device spreads, cycle-to-cycle and write noise), read "
                         "after every pulse, in the CSV format of device fit.")
    tr.add_argument("card")
    tr.add_argument("-o", "--out", required=True, metavar="DATA.csv")
    tr.add_argument("--devices", type=int, default=10)
    tr.add_argument("--cycles", type=int, default=5)
    tr.add_argument("--pulses", type=int, help="pulses per train (default 1.3 x states)")
    tr.add_argument("--seed", type=int, default=0)
    im = dsub.add_parser("import-aihwkit", help="aihwkit device settings (JSON) -> a card",
                         description="Read an aihwkit device configuration in its dictionary "
                         "form (JSON: {\"device\": class name, \"parameters\": fields}) and "
                         "write a device card (the field mapping: docs/devices.md).")
    im.add_argument("file", metavar="FILE.json")
    im.add_argument("-o", "--out", required=True, metavar="CARD.yaml")
    im.add_argument("--allow-unsupported", action="store_true",
                    help="keep aihwkit settings crossbar-ep does not simulate in the card's "
                    "metadata (for export) instead of refusing the file")
    ex = dsub.add_parser("export-aihwkit", help="a card -> aihwkit device settings (JSON)",
                         description="Write a card's model and parameters as an aihwkit "
                         "device configuration in its dictionary form (JSON).")
    ex.add_argument("card")
    ex.add_argument("-o", "--out", required=True, metavar="FILE.json")


def _pairs(items: list, what: str) -> dict:
    import yaml
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CrossbarEPError(f"--{what} {item!r}: use KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value) if what == "fix" else value.strip()
        except yaml.YAMLError:
            raise CrossbarEPError(f"--{what} {item!r}: the value is not a number or list") \
                from None
    return out


def _fit(args) -> int:
    from crossbar_ep.devices.fit_card import fit_card
    from crossbar_ep.plots.device_fit import plot_card_fit

    fixed = _pairs(args.fix, "fix")
    for k, v in fixed.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, list)):
            raise CrossbarEPError(f"--fix {k}={v!r}: give a number (or a list of numbers)")
    conv = _pairs(args.convention, "convention")
    horizon = {"auto": "auto", "train": None}.get(args.horizon)
    if horizon is None and args.horizon != "train":
        if not args.horizon.isdigit() or int(args.horizon) < 1:
            raise CrossbarEPError(f"--horizon {args.horizon}: use auto, train or a number >= 1")
        horizon = int(args.horizon)
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    result = fit_card(args.data, args.model, out=args.out, name=args.name, source=args.source,
                      description=args.description, conventions=conv, fixed=fixed,
                      g_range=args.g_range, criterion=args.criterion, horizon=horizon, log=log)
    stem = os.path.splitext(args.out)[0]
    table = args.table or stem + "_fit.md"
    figure = args.figure or stem + "_fit.png"
    text = result.table()
    try:
        with open(table, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise CrossbarEPError(f"{table}: cannot write ({exc.strerror or exc})") from None
    plot_card_fit(result, figure)
    print(text)
    print(f"wrote {args.out} (model {result.model}), {figure}, {table}")
    return 0


def _trains(args) -> int:
    from crossbar_ep.devices.card import load_card
    from crossbar_ep.devices.fit_data import write_pulse_csv
    from crossbar_ep.devices.trains import simulate_trains

    card = load_card(args.card)
    if not card.pulsed:
        raise CrossbarEPError(f"{args.card}: the {card.model} device takes exact updates, not "
                              f"pulses")
    n = args.pulses or int(min(max(1.3 * card.n_states, 10), 20000))
    if not (1 <= args.devices <= 1000 and 1 <= args.cycles <= 1000 and 1 <= n <= 100000):
        raise CrossbarEPError("device trains: --devices and --cycles must be 1 to 1000, "
                              "--pulses 1 to 100000")
    rows = simulate_trains(card, args.devices, args.cycles, n, args.seed)
    try:
        write_pulse_csv(args.out, rows)
    except OSError as exc:
        raise CrossbarEPError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {args.out}: {args.devices} devices x {args.cycles} cycles of {n} SET and "
          f"{n} RESET pulses ({len(rows)} reads)")
    return 0


def _import(args) -> int:
    from crossbar_ep.devices.aihwkit_io import import_file
    card, kept = import_file(args.file, args.out, args.allow_unsupported)
    for k in kept:
        print(f"warning: aihwkit {k} kept in the card's metadata for export; crossbar-ep does "
              f"not simulate it", file=sys.stderr)
    print(f"wrote {args.out}: {card.name} (model {card.model})")
    return 0


def _export(args) -> int:
    from crossbar_ep.devices.aihwkit_io import export_file
    cls, notes = export_file(args.card, args.out)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"wrote {args.out}: aihwkit {cls}")
    return 0


def run(args) -> int:
    """Run one of :data:`COMMANDS` (``args.device_command``)."""
    return {"fit": _fit, "trains": _trains, "import-aihwkit": _import,
            "export-aihwkit": _export}[args.device_command](args)

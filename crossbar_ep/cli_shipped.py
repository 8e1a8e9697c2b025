"""Command line for the shipped data: ``crossbar-ep device list`` (every shipped device card
with its model, states and citation) and the resolution of shipped names in the other
commands' arguments (``crossbar-ep run mnist_3hl``, ``compare ... --device rpu_gokmen2016``,
``sweep wire_resistance``).  Names are looked up by :mod:`crossbar_ep.shipped`."""

from __future__ import annotations

import math
import os

from crossbar_ep import shipped


def add_device_list(device_subparsers) -> None:
    """Add ``list`` to the ``device`` command's subparsers."""
    p = device_subparsers.add_parser(
        "list", help="the shipped device cards with their model, states and citation",
        description="Every device card shipped with crossbar-ep: its name (what "
        "crossbar.device, --device and device info accept), model, number of states and the "
        "publication its parameters come from.")
    p.add_argument("--paths", action="store_true", help="also print each card's file")


def run_device_list(args) -> int:
    """Print the shipped cards as a table; a card that fails to load is listed with its
    error instead of stopping the listing."""
    from crossbar_ep.devices.card import load_card
    from crossbar_ep.errors import CrossbarEPError
    cards = shipped.card_names()
    if not cards:
        raise CrossbarEPError("no shipped device cards found (the installation lacks "
                              "device_models/): reinstall crossbar-ep")
    rows = []
    for name, path in cards.items():
        try:
            card = load_card(path)
        except CrossbarEPError as exc:
            rows.append((name, "(invalid)", "-", str(exc), path))
            continue
        states = (f"{card.n_states:.0f}" if math.isfinite(card.n_states) else "continuous")
        rows.append((name, card.model, states, " ".join(card.source.split()), path))
    wide = [max(len(r[i]) for r in rows + [("name", "model", "states")]) for i in range(3)]
    print(f"{'name':<{wide[0]}}  {'model':<{wide[1]}}  {'states':>{wide[2]}}  source")
    for name, model, states, source, path in rows:
        print(f"{name:<{wide[0]}}  {model:<{wide[1]}}  {states:>{wide[2]}}  {source}")
        if args.paths:
            print(f"{'':<{wide[0]}}  {path}")
    print(f"\n{len(rows)} cards; use a name as crossbar.device, --device NAME or "
          f"crossbar-ep device info NAME")
    return 0


def resolve_names(args) -> None:
    """Replace shipped names in the parsed arguments by the files they name: the experiment
    of run / validate / compare / diagnose, the sweep file of sweep, compare's --device cards
    and --twin experiment.  Existing paths are left alone; an unknown bare name raises a
    ConfigError listing the shipped names."""
    cmd = args.command
    if cmd in ("run", "validate", "compare") and getattr(args, "experiment", None):
        args.experiment = shipped.resolve_experiment(args.experiment, sweeps=False)
    elif cmd == "diagnose" and not os.path.exists(args.target):
        args.target = shipped.resolve_experiment(args.target)
    elif cmd == "sweep":
        args.sweep_file = shipped.resolve_experiment(args.sweep_file, sweeps=True)
    if cmd == "compare":
        if args.devices:
            args.devices = [shipped.resolve_card(d) for d in args.devices]
        if args.twin and not os.path.exists(args.twin):
            args.twin = shipped.resolve_experiment(args.twin)

"""Command line: ``crossbar-ep run | validate | compare | sweep | device | inspect | plot |
export-netlist | diagnose | summary``.

User errors (bad YAML, missing data, unresumable run) print one message without a traceback
and exit with status 2; Ctrl-C exits with 130 and leaves the last checkpoint resumable.
"""

from __future__ import annotations

import argparse
import sys

from crossbar_ep import cli_shipped
from crossbar_ep import cli_dynamics
from crossbar_ep import cli_evaluate
from crossbar_ep.errors import CrossbarEPError, interrupts


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="crossbar-ep",
        description="Train FRE-RNNs with Equilibrium Propagation on ideal or crossbar backends.")
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train an experiment",
                         description="Train an experiment file; writes a run directory.")
    run.add_argument("experiment", nargs="?", help="experiment YAML (omit with --resume)")
    run.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue an interrupted run from its last checkpoint")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a config key, e.g. training.epochs=2")
    run.add_argument("--epochs", type=int, help="shorthand for --set training.epochs=N")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--overwrite", action="store_true",
                     help="start in a non-empty --out folder anyway, deleting the files of an "
                     "earlier run there (other files are left alone)")
    run.add_argument("--accept-config-changes", action="store_true",
                     help="with --resume: continue although RUN_DIR/config.yaml was edited "
                     "since the last checkpoint")
    run.add_argument("--new-traces", action="store_true",
                     help="with --resume: start a new trace file for the epochs to come (the "
                     "current one, missing or not this run's, is kept renamed)")

    val = sub.add_parser("validate", help="check an experiment file without running it")
    val.add_argument("experiment")
    val.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE")
    cmp_ = sub.add_parser("compare", help="train on the ideal and the crossbar backend, "
                          "side by side", description="Train the same net, data, init and "
                          "seed on the ideal digital backend and on the crossbar backend; "
                          "writes a table and a PNG (resumes interrupted runs in --out).")
    cmp_.add_argument("experiment")
    cmp_.add_argument("--out", help="output directory (default runs/<name>-compare-<time>)")
    cmp_.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE")
    cmp_.add_argument("--epochs", type=int)
    cmp_.add_argument("--device", dest="devices", action="append", metavar="CARD.yaml",
                      help="train one crossbar run per card given (repeatable) against one "
                      "digital twin; default: the experiment's crossbar.device")
    cmp_.add_argument("--twin", metavar="RUN_DIR|TWIN.yaml",
                      help="the digital row: a trained twin's run directory (e.g. "
                      "runs/twin3hl, nothing retrained) or an experiment file trained as the "
                      "twin (e.g. experiments/mnist_3hl_twin.yaml); default: the experiment "
                      "itself with the crossbar off")
    cmp_.add_argument("--quiet", action="store_true")

    sw = sub.add_parser("sweep", help="run a sweep file (grids, zips, random samples, seeds)",
                        description="Run every point of a sweep file in parallel on this "
                        "machine (--workers) or a Dask cluster (--scheduler, --dask-local); "
                        "results land in SWEEP_DIR/results.csv and results.h5.")
    sw.add_argument("sweep_file")
    sw.add_argument("--out", help="sweep directory (default runs/sweep-<name>)")
    sw.add_argument("--workers", type=int, default=1, help="local worker processes")
    sw.add_argument("--scheduler", metavar="tcp://HOST:8786",
                    help="run on an existing Dask distributed scheduler")
    sw.add_argument("--dask-local", type=int, metavar="N",
                    help="start a local Dask cluster of N worker processes")
    sw.add_argument("--resume", action="store_true", help="run only the missing points")
    sw.add_argument("--retry-failed", action="store_true",
                    help="with --resume, run failed points again")
    sw.add_argument("--accept-config-changes", action="store_true",
                    help="with --resume, accept an edited sweep, base experiment or device "
                    "card: points whose config changed run again from scratch")
    sw.add_argument("--quiet", action="store_true")

    ex = sub.add_parser("export-netlist", help="write an ngspice netlist of one trained tile",
                        description="One tile of a trained crossbar run as an ngspice "
                        "netlist: devices at their conductances, drive voltages from a real "
                        "input sample, ammeters on the sensed lines (netlists/README.md).")
    ex.add_argument("run_dir")
    ex.add_argument("--layer", help="matrix: 0, 1, ..., f, or a name (W1, R1_4)")
    ex.add_argument("--network", action="store_true",
                    help="the whole (small) network's free phase instead of one tile: arrays "
                    "and behavioural tanh neurons; ngspice's .op is the settled state")
    ex.add_argument("--tile", nargs=2, type=int, default=[0, 0], metavar=("I", "J"),
                    help="row-tile and column-tile index (default 0 0)")
    ex.add_argument("--input", type=int, default=0, metavar="SAMPLE",
                    help="index of the input sample (default 0)")
    ex.add_argument("--split", choices=("test", "train"), default="test")
    ex.add_argument("--transposed", action="store_true",
                    help="the transposed (feedback) read instead of the forward read")
    ex.add_argument("-o", "--out", required=True, help="netlist file to write (.cir)")
    ex.add_argument("--run-ngspice", action="store_true",
                    help="also run it with ngspice and compare with the simulator")

    ins = sub.add_parser("inspect", help="print the tree of an HDF5 trace file",
                         description="Groups and datasets of a trace file with shapes, dtypes "
                         "and units (a run directory: its traces.h5).")
    ins.add_argument("path", help="trace file or run directory")

    pl = sub.add_parser("plot", help="write the figures of a run or compare directory",
                        description="PNG figures: accuracy and loss, settling trajectories, "
                        "conductance histograms, pulse heatmaps, device pulse response.")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="folder for the PNGs (default RUN_DIR/figures)")

    dg = sub.add_parser("diagnose", help="convergence diagnostics of the settling dynamics",
                        description="Settle test samples with an experiment's freshly "
                        "initialised net or a trained run and report per-layer residuals, "
                        "steps and settling time (s), the spectral radius of the map's "
                        "Jacobian at the free fixed point and the finite-time Lyapunov "
                        "exponent (docs/model.md).")
    dg.add_argument("target", help="experiment YAML or run directory")
    dg.add_argument("--samples", type=int, default=32, help="test samples settled")
    dg.add_argument("--jacobian-samples", type=int, default=4,
                    help="samples whose Jacobian eigenvalues are computed (O(N^3) each)")
    dg.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE")
    dg.add_argument("--nudge-sources", action="store_true",
                    help="also split each layer's EP signal |s_nudged - s_free| by nudge "
                    "source (the output and each auxiliary head alone)")
    dg.add_argument("--plot", metavar="PNG", help="with --nudge-sources: draw the split")

    sm = sub.add_parser("summary", help="one table of many runs' accuracies and speed",
                        description="Best, final and chosen-epoch test accuracy (%), mean "
                        "epoch time (s), samples/s and the heads' best accuracies of each run "
                        "directory (or metrics.csv / metrics.json file), as a Markdown or CSV "
                        "table.")
    sm.add_argument("runs", nargs="+", metavar="RUN_DIR")
    sm.add_argument("--at", default="1,5,10,20", help="epochs reported (default 1,5,10,20)")
    sm.add_argument("--format", choices=("md", "csv"), default="md")
    sm.add_argument("--group-by", choices=("seed",), help="one row (and one band in --plot) "
                    "per group of runs that differ only in training.seed: mean ± sd")
    sm.add_argument("--into", metavar="FILE.md", help="write the table into FILE.md between "
                    "its '<!-- results-table:start' and '<!-- results-table:end -->' markers")
    sm.add_argument("--plot", metavar="PNG", help="also draw every run's test accuracy "
                    "against epoch into one figure")
    sm.add_argument("--train", action="store_true", help="with --plot: training accuracy too")
    sm.add_argument("--title", default="", help="with --plot: the figure's title")
    sm.add_argument("--ymin", type=float, help="with --plot: lowest accuracy shown, %% "
                    "(default: 1 point under the lowest test accuracy from epoch 3 on)")

    cli_dynamics.add_parser(sub)
    cli_evaluate.add_parser(sub)

    dev = sub.add_parser("device", help="inspect, fit, import and export device cards")
    dsub = dev.add_subparsers(dest="device_command", required=True)
    cli_shipped.add_device_list(dsub)
    info = dsub.add_parser("info", help="print a card's parameters, units, states, citation")
    info.add_argument("card")
    plot = dsub.add_parser("plot", help="plot the pulse response (SET then RESET train)")
    plot.add_argument("card")
    plot.add_argument("--out", help="PNG file (default: <card name>_pulse_response.png)")
    plot.add_argument("--devices", type=int, default=5, help="devices drawn with variation")
    plot.add_argument("--pulses", type=int, help="pulses per direction (default 1.2 x states)")
    plot.add_argument("--seed", type=int, default=0)
    from crossbar_ep import cli_device_tools
    cli_device_tools.add_parsers(dsub)
    return ap


def _cmd_compare(args) -> int:
    from crossbar_ep.config.experiment import load_config
    from crossbar_ep.runs import compare, train
    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"training.epochs={args.epochs}")
    cfg = load_config(args.experiment, overrides)
    out = args.out or train.default_run_dir(cfg).replace(cfg.name, cfg.name + "-compare", 1)
    try:
        with interrupts():
            results = compare.run_pair(cfg, out, progress=not args.quiet,
                                       log=lambda m: print(m, file=sys.stderr),
                                       devices=args.devices, twin=args.twin)
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished epochs are checkpointed: crossbar-ep compare "
              f"{args.experiment} --out {out}", file=sys.stderr)
        return 130
    print(compare.table(results))
    print(f"report: {out}/compare.md, {out}/compare.png")
    return 0


def _cmd_diagnose(args) -> int:
    import os

    from crossbar_ep.model.diagnostics import diagnose
    from crossbar_ep.runs import train
    if args.plot and not args.nudge_sources:
        raise CrossbarEPError("--plot draws the --nudge-sources split; add --nudge-sources")
    if args.jacobian_samples < 1 or args.samples < 1:
        raise CrossbarEPError("diagnose: --samples and --jacobian-samples need at least 1")
    if os.path.isdir(args.target):
        if args.overrides:
            raise CrossbarEPError("--set applies to an experiment file, not a run directory")
        run = train.resume(args.target, record=False)
        what = f"run {args.target} after epoch {run.epochs_done}"
    else:
        from crossbar_ep.config.experiment import load_config
        run = train.setup(load_config(args.target, args.overrides), "<no run directory>")
        what = f"{args.target} (initial weights)"
    if run.cfg.training.algorithm != "ep":
        raise CrossbarEPError("diagnose needs an EP experiment (training.algorithm: ep)")
    x = run.data.x_test[:max(1, args.samples)]
    if run.cfg.model.conv.enabled:
        if args.nudge_sources:
            raise CrossbarEPError("--nudge-sources splits a layered net's signals; this is a "
                                  "conv net (model.conv)")
        from crossbar_ep.model.conv_diagnostics import diagnose_conv
        rep = diagnose_conv(run.learner.settler, x, args.jacobian_samples)
        print(f"{what}; {x.shape[0]} test samples; conv net")
        print(rep.text())
        return 0
    rep = diagnose(run.net, run.learner.settler, x, run.cfg.settling.tau_s,
                   args.jacobian_samples)
    print(f"{what}; {x.shape[0]} test samples")
    print(rep.text(run.cfg.settling.tau_s))
    if args.nudge_sources:
        from crossbar_ep.config.build import make_settler
        from crossbar_ep.model.learners import one_hot
        from crossbar_ep.model.nudge_sources import signal_by_source
        y1h = one_hot(run.data.y_test[:x.shape[0]], run.data.n_classes, run.net.dtype)
        targets = getattr(run.learner, "targets", None)     # distillation: per-head targets
        y = targets(x.astype(run.net.dtype), y1h) if targets is not None else y1h
        src = signal_by_source(run.net, lambda: make_settler(run.cfg, run.net), x, y)
        print(src.text())
        if args.plot:
            from crossbar_ep.plots.layer_signals import plot_nudge_sources
            try:
                plot_nudge_sources(src, args.plot, f"{run.cfg.name}: {what}")
            except OSError as exc:
                raise CrossbarEPError(f"--plot {args.plot}: cannot write "
                                      f"({exc.strerror or exc})") from None
            print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _cmd_device(args) -> int:
    from crossbar_ep import cli_device_tools
    if args.device_command in cli_device_tools.COMMANDS:
        return cli_device_tools.run(args)
    from crossbar_ep.devices.card import describe, load_card
    if args.device_command == "list":
        return cli_shipped.run_device_list(args)
    if args.device_command == "plot" and not (1 <= args.devices <= 100 and (
            args.pulses is None or 1 <= args.pulses <= 100000)):
        raise CrossbarEPError("device plot: --devices must be 1 to 100 and --pulses 1 to "
                              "100000")
    card = load_card(args.card)
    if args.device_command == "info":
        print(describe(card))
        return 0
    if not card.pulsed:
        raise CrossbarEPError(f"{args.card}: the {card.model} device takes exact updates and "
                              f"has no pulse response to plot")
    from crossbar_ep.cli_outputs import device_plot
    return device_plot(card, args)


def _cmd_export(args) -> int:
    import numpy as np

    from crossbar_ep.circuit.spice import check_netlist_path, write_netlist
    check_netlist_path(args.out)            # before the (slow) resume
    if args.network:
        return _export_network(args)
    if not args.layer:
        raise CrossbarEPError("export-netlist: give --layer (one tile) or --network")
    from crossbar_ep.runs.export import export_tile
    e = export_tile(args.run_dir, args.layer, args.tile[0], args.tile[1], args.input,
                    args.split, args.transposed)
    write_netlist(args.out, e.netlist)
    print(f"wrote {args.out}: {e.matrix} tile {e.tile}, {e.G.shape[0]} rows x "
          f"{e.G.shape[1]} physical columns")
    if args.run_ngspice:
        from crossbar_ep.circuit.spice import run_ngspice, sensed_currents
        n = e.G.shape[0] if args.transposed else e.G.shape[1]
        I = sensed_currents(run_ngspice(e.netlist), n)
        got = I if args.transposed else I[0::2] - I[1::2]
        err = np.max(np.abs(got - e.expected_A)) / max(np.max(np.abs(e.expected_A)), 1e-30)
        print(f"ngspice vs simulator: max relative difference {err:.2e} over {got.size} lines")
    return 0


def _export_network(args) -> int:
    import numpy as np

    from crossbar_ep.circuit.spice import write_netlist
    from crossbar_ep.circuit.spice_network import network_netlist, states_from_values
    from crossbar_ep.runs import train
    run = train.resume(args.run_dir, record=False)
    pulses = run.learner.pulses
    if pulses is None:
        raise CrossbarEPError(f"{args.run_dir}: not a crossbar run (crossbar.enabled is false)")
    xs = run.data.x_test if args.split == "test" else run.data.x_train
    if not 0 <= args.input < xs.shape[0]:
        raise CrossbarEPError(f"--input {args.input}: the {args.split} set has {xs.shape[0]} "
                              f"samples")
    x = xs[args.input:args.input + 1]
    text = network_netlist(run.net, pulses.crossbars, x[0],
                           title=f"crossbar-ep network: {args.run_dir}, epoch "
                           f"{run.epochs_done}, {args.split} sample {args.input}")
    write_netlist(args.out, text)
    print(f"wrote {args.out}: {'-'.join(map(str, run.net.sizes))} network, free phase")
    if args.run_ngspice:
        from crossbar_ep.circuit.spice import run_ngspice
        per = next(iter(pulses.crossbars.values())).per
        got = states_from_values(run_ngspice(text), run.net, per.v_read_V / per.input_range)
        from crossbar_ep.model.settle import settle_reference
        fixed = settle_reference(run.net, x.astype(float), 1000)
        free = run.learner.settler.free(x)
        err = max(float(np.abs(g - fixed[k + 1][0]).max()) for k, g in enumerate(got))
        gap = max(float(np.abs(g - free.s[k + 1][0]).max()) for k, g in enumerate(got))
        print(f"ngspice operating point vs the settled fixed point: max |ds| {err:.2e} (vs the "
              f"run's {run.cfg.training.T}-step free phase: {gap:.2e})")
    return 0


def _cmd_inspect(args) -> int:
    import os

    from crossbar_ep.io.traces import describe_tree, open_run
    from crossbar_ep.cli_runs import check_input_path
    path = args.path
    check_input_path(path, "trace file")
    if os.path.isdir(path):
        with open_run(path) as tr:
            path = tr.path
    elif not os.path.exists(path):
        raise CrossbarEPError(f"{path}: no such file")
    print(describe_tree(path))
    return 0


def _cmd_sweep(args) -> int:
    from crossbar_ep.cli_runs import sweep_command
    return sweep_command(args)


def _cmd_plot(args) -> int:
    from crossbar_ep.cli_outputs import plot_command
    return plot_command(args)


def _cmd_summary(args) -> int:
    import math

    from crossbar_ep.runs.summary import expand_paths, parse_epochs, summary_table
    if args.ymin is not None and not math.isfinite(args.ymin):
        raise CrossbarEPError(f"--ymin {args.ymin}: give a finite accuracy in %, e.g. --ymin 90")
    skipped: list = []
    paths = expand_paths(args.runs)
    table = summary_table(paths, parse_epochs(args.at), args.format, skipped=skipped,
                          group_by=args.group_by)
    if args.into:
        from crossbar_ep.runs.doc_tables import summary_args, write_block
        write_block(args.into, summary_args(args), table)
        print(f"wrote the table into {args.into}", file=sys.stderr)
    else:
        print(table)
    for _, msg in skipped:
        print(f"skipped {msg}", file=sys.stderr)
    if args.plot:
        from crossbar_ep.runs.summary import plot_summary
        bad = {p for p, _ in skipped}
        runs = [r for r in paths if r not in bad]
        png = plot_summary(runs, args.plot, args.title, args.train, args.ymin, args.group_by)
        print(f"wrote {png}", file=sys.stderr)
    return 0


def _cmd_validate(args) -> int:
    from crossbar_ep.config.experiment import load_config, read_yaml
    raw = read_yaml(args.experiment)
    if isinstance(raw, dict) and "base" in raw and "model" not in raw:
        from crossbar_ep.runs.sweep import load_sweep
        s = load_sweep(args.experiment)
        print(f"{args.experiment}: OK (sweep {s.name}: {len(s.points)} points over "
              f"{', '.join(s.axes) or 'seeds only'}; base {s.base})")
        return 0
    cfg = load_config(args.experiment, args.overrides)
    if cfg.crossbar.enabled:                 # the card is data too: a bad one fails here
        from crossbar_ep.devices.card import load_card
        try:
            load_card(cfg.crossbar.device, cfg.crossbar.device_params)
        except CrossbarEPError as exc:
            raise type(exc)(f"{args.experiment}: crossbar.device: {exc}") from None
    L = cfg.n_hidden
    net = (f"conv {list(cfg.model.conv.channels)} on {list(cfg.image_shape())}"
           if cfg.model.conv.enabled else f"hidden {list(cfg.model.hidden)}")
    print(f"{args.experiment}: OK ({cfg.name}: {cfg.training.algorithm}, {net}, "
          f"{L} hidden layer{'s' if L > 1 else ''}, "
          f"T/K {cfg.training.T}/{cfg.training.K}, {cfg.training.epochs} epochs)")
    from crossbar_ep.config.memory import describe, estimate
    print(f"  memory: {describe(estimate(cfg))}")
    return 0


def _cmd_run(args) -> int:
    from crossbar_ep.cli_runs import run_command
    return run_command(args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "validate": _cmd_validate, "device": _cmd_device,
                "compare": _cmd_compare, "inspect": _cmd_inspect, "plot": _cmd_plot,
                "sweep": _cmd_sweep, "export-netlist": _cmd_export,
                "diagnose": _cmd_diagnose, "summary": _cmd_summary,
                "diagnose-sweep": cli_dynamics.run, "evaluate": cli_evaluate.run}
    from crossbar_ep.cli_runs import check_environment, closed_pipe
    try:
        check_environment()
        cli_shipped.resolve_names(args)
        rc = handlers[args.command](args)
        sys.stdout.flush()          # a closed pipe shows here, not at interpreter exit
        return rc
    except CrossbarEPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_pipe()


if __name__ == "__main__":
    sys.exit(main())

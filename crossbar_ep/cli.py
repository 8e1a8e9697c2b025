"""Command line: ``crossbar-ep run | validate``.

User errors (bad YAML, missing data, unresumable run) print one message without a traceback
and exit with status 2; Ctrl-C exits with 130 and leaves the last checkpoint resumable.
"""

from __future__ import annotations

import argparse
import sys

from .errors import CrossbarEPError


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

    val = sub.add_parser("validate", help="check an experiment file without running it")
    val.add_argument("experiment")
    val.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE")
    return ap


def _cmd_validate(args) -> int:
    from .config import load_config
    cfg = load_config(args.experiment, args.overrides)
    L = cfg.n_hidden
    print(f"{args.experiment}: OK ({cfg.name}: {cfg.training.algorithm}, hidden "
          f"{list(cfg.model.hidden)}, {L} hidden layer{'s' if L > 1 else ''}, "
          f"T/K {cfg.training.T}/{cfg.training.K}, {cfg.training.epochs} epochs)")
    return 0


def _cmd_run(args) -> int:
    from . import train
    from .config import load_config

    if args.resume:
        if args.experiment or args.overrides:
            raise CrossbarEPError("--resume continues a run with its saved config.yaml; "
                                  "drop the experiment file and --set (only --epochs may "
                                  "extend it)")
        run = train.resume(args.resume, epochs=args.epochs)
        print(f"resuming {run.out_dir} after epoch {run.epochs_done} of "
              f"{run.cfg.training.epochs}", file=sys.stderr)
    else:
        if not args.experiment:
            raise CrossbarEPError("crossbar-ep run: give an experiment file, or --resume RUN_DIR")
        overrides = list(args.overrides)
        if args.epochs is not None:
            overrides.append(f"training.epochs={args.epochs}")
        cfg = load_config(args.experiment, overrides)
        run = train.start(cfg, args.out)
        print(f"run directory: {run.out_dir}", file=sys.stderr)
    try:
        s = train.fit(run, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted after epoch {run.epochs_done}; the checkpoint in {run.out_dir} "
              f"is intact: crossbar-ep run --resume {run.out_dir}", file=sys.stderr)
        return 130
    print(s["line"])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "validate": _cmd_validate}
    try:
        return handlers[args.command](args)
    except CrossbarEPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``crossbar-ep evaluate``: accuracy of a trained run over time after programming, with drift
compensation, faults and recovery (:mod:`crossbar_ep.runs.retention`)."""

from __future__ import annotations

import os


def add_parser(sub) -> None:
    ev = sub.add_parser(
        "evaluate", help="accuracy over time after programming (retention), faults, recovery",
        description="Program a run's trained network onto arrays of a card (--card, --set "
        "crossbar.KEY=VALUE), or keep an in-situ run's own arrays; at each time after "
        "programming (--times) apply the card's drift and read noise and evaluate the test "
        "set through the full settle.  --repeats redraws programming noise, drift exponents, "
        "faults and read noise (seeded).  Writes OUT/retention.csv, retention.h5, retention.md "
        "and retention.png; resumes where it stopped (docs/retention.md).")
    ev.add_argument("run_dir")
    ev.add_argument("--card", help="device card (name or file) to program the weights onto; "
                    "default: an in-situ run's own arrays (a digital run needs one)")
    ev.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="crossbar.KEY=VALUE", help="crossbar settings of the arrays "
                    "(periphery, tiles, weight_range_factor, seed, ...)")
    ev.add_argument("--times", default="1s,1h,1d,1w,1mo,1y,10y",
                    help="times after programming (units s, min, h, d, w, mo, y; default "
                    "1s,1h,1d,1w,1mo,1y,10y)")
    ev.add_argument("--repeats", type=int, default=1, help="independent draws (default 1)")
    ev.add_argument("--compensation", default="none",
                    help="drift-compensation modes compared: none, global, column (default "
                    "none; e.g. none,global)")
    ev.add_argument("--faults", metavar="stuck_off=F,stuck_on=F",
                    help="fractions of devices that fail (stuck at G_min / G_max) after "
                    "programming")
    ev.add_argument("--recover", metavar="BATCHES",
                    help="in-situ EP recovery: accuracy after these numbers of training "
                    "batches on the drifted arrays (e.g. 0,50,120), beside reprogramming and "
                    "doing nothing")
    ev.add_argument("--recover-at", metavar="TIMES",
                    help="times (from --times) at which to run the recoveries (default: the "
                    "last time)")
    ev.add_argument("--recover-modes", default="none",
                    help="compensation modes whose arrays are recovered (default none)")
    ev.add_argument("--samples", type=int, help="test samples (default: the whole test set)")
    ev.add_argument("--seed-offset", type=int, default=0,
                    help="added to crossbar.seed for every repeat's draws (default 0)")
    ev.add_argument("--out", help="output folder (default RUN_DIR/retention)")
    ev.add_argument("--overwrite", action="store_true",
                    help="start again in an --out folder holding another plan's evaluation")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")


def plan_from_args(args):
    from crossbar_ep.errors import ConfigError
    from crossbar_ep.runs.retention import RetentionPlan, parse_faults, parse_times
    times = parse_times(args.times)
    modes = tuple(m.strip() for m in args.compensation.split(",") if m.strip())
    for m in modes:
        if m not in ("none", "global", "column"):
            raise ConfigError(f"--compensation {args.compensation!r}: modes are none, global, "
                              f"column")
    if args.repeats < 1 or args.repeats > 1000:
        raise ConfigError(f"--repeats {args.repeats}: give 1 to 1000")
    if args.samples is not None and args.samples < 1:
        raise ConfigError(f"--samples {args.samples}: give at least 1")
    recover = ()
    if args.recover:
        try:
            recover = tuple(sorted({int(b) for b in args.recover.split(",")}))
        except ValueError:
            raise ConfigError(f"--recover {args.recover!r}: give batch counts, e.g. "
                              f"0,50,120") from None
        if recover[0] < 0 or recover[-1] > 1_000_000:
            raise ConfigError(f"--recover {args.recover!r}: batch counts 0 .. 1e6")
    labels = [lab for lab, _ in times]
    at = tuple(a.strip() for a in (args.recover_at or labels[-1]).split(","))
    for a in at:
        if a not in labels:
            raise ConfigError(f"--recover-at {a!r}: not one of --times ({', '.join(labels)})")
    rmodes = tuple(m.strip() for m in args.recover_modes.split(","))
    card = args.card
    if card and os.path.isfile(card):
        card = os.path.abspath(card)
    return RetentionPlan(times=times, repeats=args.repeats, compensation=modes, card=card,
                         overrides=tuple(args.overrides), faults=parse_faults(args.faults),
                         samples=args.samples, seed_offset=args.seed_offset, recover=recover,
                         recover_at=at, recover_modes=rmodes)


def run(args) -> int:
    from crossbar_ep.runs.retention_report import evaluate_run
    plan = plan_from_args(args)
    res = evaluate_run(args.run_dir, plan, args.out, progress=not args.quiet,
                       overwrite=args.overwrite)
    print(res["table"], end="")
    print(f"wrote {os.path.join(res['out_dir'], 'retention.csv')}, retention.h5, retention.md, "
          f"retention.png")
    return 0

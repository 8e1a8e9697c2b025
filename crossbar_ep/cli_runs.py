"""The CLI's ``run`` and ``sweep`` commands and the checks every command shares: the
process environment, output paths, a closed pipe (docs/runs.md, docs/sweeps.md).

Exit statuses: 0 done; 2 a user error (one message, no traceback); 3 a sweep finished with
failed points (the message gives the ``--resume --retry-failed`` command); 130 interrupted
(Ctrl-C or SIGTERM; the message gives the resume command); 141 the output pipe was closed
(``crossbar-ep ... | head``).
"""

from __future__ import annotations

import os
import stat
import sys

from crossbar_ep.errors import CrossbarEPError, interrupts

EXIT_BROKEN_PIPE = 141


def check_environment() -> None:
    """Before any heavy import: the CLI only writes figures to files, so matplotlib gets the
    file backend whatever ``MPLBACKEND`` says; ``NUMBA_NUM_THREADS`` must not be zero or
    negative (Numba fails at import otherwise)."""
    os.environ["MPLBACKEND"] = "Agg"
    text = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    try:
        bad = int(text) < 1
    except ValueError:         # not a number: Numba warns and uses its default
        bad = False
    if bad:
        cores = os.cpu_count() or 1
        raise CrossbarEPError(f"$NUMBA_NUM_THREADS={text!r}: needs a whole number of threads "
                              f"from 1 to the core count ({cores}); unset it, or e.g. export "
                              f"NUMBA_NUM_THREADS=1")


def closed_pipe() -> int:
    """stdout's reader went away (``| head``): quiet exit, no traceback at shutdown."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def check_output_file(path: str, what: str = "output file") -> None:
    """An output path must be a regular file or new, in an existing folder: no device
    (``/dev/full``), FIFO or folder, where a write would fail late or block."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CrossbarEPError(f"{path}: the folder {folder} does not exist; create it or "
                                  f"give another {what}") from None
        return
    except OSError as exc:
        raise CrossbarEPError(f"{path}: cannot use it as the {what} ({exc.strerror})") \
            from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, " \
            "FIFO or socket)"
        raise CrossbarEPError(f"{path}: is {kind}; give a file name for the {what}")


def check_input_path(path: str, what: str) -> None:
    """An input path must not block its reader (a FIFO) or be a device."""
    from crossbar_ep.io.files import UnsafeFileError, check_readable
    try:
        check_readable(path, what)
    except UnsafeFileError as exc:
        raise CrossbarEPError(str(exc)) from None


def run_command(args) -> int:
    """``crossbar-ep run``: start or resume a run and train it."""
    from crossbar_ep.runs import train

    if args.resume:
        if args.experiment or args.overrides or args.out or args.overwrite:
            raise CrossbarEPError("--resume continues a run in its own folder with its saved "
                                  "config.yaml; drop the experiment file, --set, --out and "
                                  "--overwrite (only --epochs may extend it)")
        run = train.resume(args.resume, epochs=args.epochs,
                           accept_changes=args.accept_config_changes,
                           new_traces=getattr(args, "new_traces", False))
        if run.epochs_done >= run.cfg.training.epochs:
            print(f"{run.out_dir}: already trained {run.epochs_done} epochs; nothing to do "
                  f"(extend it with --epochs {run.epochs_done + 1} or more)", file=sys.stderr)
            return 0
        print(f"resuming {run.out_dir} after epoch {run.epochs_done} of "
              f"{run.cfg.training.epochs}", file=sys.stderr)
    else:
        if not args.experiment:
            raise CrossbarEPError("crossbar-ep run: give an experiment file, or --resume RUN_DIR")
        for flag in ("accept_config_changes", "new_traces"):
            if getattr(args, flag, False):
                raise CrossbarEPError(f"--{flag.replace('_', '-')} goes with --resume RUN_DIR")
        check_input_path(args.experiment, "experiment file")
        overrides = list(args.overrides)
        if args.epochs is not None:
            overrides.append(f"training.epochs={args.epochs}")
        cfg = train.load_experiment(args.experiment, overrides)
        run = train.start(cfg, args.out, overwrite=args.overwrite)
        print(f"run directory: {run.out_dir}", file=sys.stderr)
    try:
        with interrupts():
            s = train.fit(run, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted after epoch {run.epochs_done}; the checkpoint in {run.out_dir} "
              f"is intact: crossbar-ep run --resume {run.out_dir}", file=sys.stderr)
        return 130
    print(s["line"])
    return 0


def sweep_command(args) -> int:
    """``crossbar-ep sweep``: run or resume a sweep; exit 3 when points failed."""
    from crossbar_ep.runs.sweep import (
        EXIT_FAILED_POINTS,
        load_sweep,
        read_results,
        resume_command,
        run_sweep,
    )
    if args.workers < 1 or (args.dask_local is not None and args.dask_local < 1):
        raise CrossbarEPError("--workers and --dask-local need at least 1")
    if args.scheduler and args.dask_local:
        raise CrossbarEPError("give either --scheduler (an existing cluster) or --dask-local")
    check_input_path(args.sweep_file, "sweep file")
    sweep = load_sweep(args.sweep_file)
    out = args.out or os.path.join("runs", f"sweep-{sweep.name}")
    again = resume_command(args.sweep_file, out, args.workers, args.scheduler,
                           args.dask_local)
    try:
        rows = run_sweep(args.sweep_file, out, args.workers, args.scheduler, args.dask_local,
                         args.resume, args.retry_failed, progress=not args.quiet,
                         log=lambda m: print(m, file=sys.stderr),
                         accept_changes=args.accept_config_changes, sweep=sweep)
    except KeyboardInterrupt:
        try:
            n = len(read_results(out))
        except CrossbarEPError:
            n = 0
        print(f"\ninterrupted: workers stopped, {n} finished point{'' if n == 1 else 's'} in "
              f"{out}/results.csv; continue with: {again}", file=sys.stderr)
        return 130
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows)} points ({failed} failed): {out}/results.csv, {out}/results.h5; "
          f"figures: crossbar-ep plot {out}")
    if failed:
        print(f"{failed} point{'' if failed == 1 else 's'} failed (errors in {out}/results.csv "
              f"and points/<id>/error.txt); after fixing the cause, run them again: "
              f"{again} --retry-failed", file=sys.stderr)
        return EXIT_FAILED_POINTS
    return 0

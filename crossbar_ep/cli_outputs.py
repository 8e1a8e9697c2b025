"""CLI commands that write figures (``plot``, ``device plot``): output paths checked first, a
run folder's derived files brought up to date, and a failed write (full disk, read-only
folder) reported as one message with no half-written PNG left behind."""

from __future__ import annotations

import json
import os
import sys
import time

from crossbar_ep.errors import CrossbarEPError

REQUIRED_METRICS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")


def _pngs(folder: str | None, files=()) -> dict:
    """PNG path -> modification time, under ``folder`` (recursively) and of ``files``."""
    found = list(files)
    if folder is not None and os.path.isdir(folder):
        for dirpath, _, names in os.walk(folder):
            found += [os.path.join(dirpath, f) for f in names if f.endswith(".png")]
    out = {}
    for p in found:
        try:
            out[p] = os.stat(p).st_mtime_ns
        except OSError:
            pass
    return out


def writing_figures(draw, what: str, folder: str | None = None, files=()):
    """Run ``draw()``; on an OSError remove the PNGs it wrote or changed (under ``folder``,
    or the given ``files``: a partial figure is worse than none) and raise a CrossbarEPError
    with the fix."""
    from crossbar_ep.io.trace_files import io_hint
    before = _pngs(folder, files)
    start = time.time_ns()
    try:
        return draw()
    except OSError as exc:
        after = _pngs(folder, files)
        for p, mtime in after.items():
            if before.get(p) != mtime and mtime >= start - 2_000_000_000:
                try:
                    os.unlink(p)
                except OSError:
                    pass
        raise CrossbarEPError(f"{what}: cannot write the figures ({exc.strerror or exc}); "
                              f"{io_hint(exc)}; nothing half-written was left") from None


def check_metrics_rows(run_dir: str) -> None:
    """Each folder ``plot`` draws must hold a metrics.json of per-epoch rows with the keys
    the curves need."""
    for dirpath in [run_dir] + [os.path.join(run_dir, d) for d in sorted(os.listdir(run_dir))]:
        path = os.path.join(dirpath, "metrics.json")
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                rows = json.load(fh)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CrossbarEPError(f"{path}: cannot read it ({exc})") from None
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise CrossbarEPError(f"{path}: not a metrics file (needs a list of per-epoch "
                                  f"rows; a run writes it after its first epoch)")
        missing = sorted({k for r in rows for k in REQUIRED_METRICS if k not in r})
        if missing:
            raise CrossbarEPError(f"{path}: the rows lack {', '.join(missing)}: not a metrics "
                                  f"file written by crossbar-ep run; if the run's "
                                  f"checkpoint.npz is there, delete metrics.json and plot "
                                  f"again (it is rebuilt from the checkpoint)")


def plot_command(args) -> int:
    """``crossbar-ep plot RUN_DIR|SWEEP_DIR|COMPARE_DIR [--out FOLDER]``."""
    from crossbar_ep.cli_runs import check_input_path
    from crossbar_ep.runs.derived import fresh_history
    d = args.run_dir
    if not os.path.isdir(d):
        raise CrossbarEPError(f"{d}: no such directory")
    out = args.out
    if out is not None and os.path.lexists(out) and not os.path.isdir(out):
        raise CrossbarEPError(f"--out {out}: is a file; give a folder for the figures")
    if os.path.isfile(os.path.join(d, "results.csv")):
        from crossbar_ep.plots.sweeps import plot_sweep
        check_input_path(os.path.join(d, "results.csv"), "results table")
        paths = writing_figures(lambda: plot_sweep(d, out), f"plot {d}",
                                out or os.path.join(d, "figures"))
    else:
        from crossbar_ep.plots.traces import plot_run_dir
        for sub in [d] + [os.path.join(d, s) for s in sorted(os.listdir(d))]:
            if os.path.isdir(sub):
                history = fresh_history(sub)
                if history is not None:
                    print(f"note: {sub}: metrics are behind the checkpoint and the folder "
                          f"cannot be updated now; the figures show the files as they are",
                          file=sys.stderr)
        check_metrics_rows(d)
        paths = writing_figures(lambda: plot_run_dir(d, out), f"plot {d}",
                                out or os.path.join(d, "figures"))
    for p in paths:
        print(f"wrote {p}")
    return 0


def device_plot(card, args) -> int:
    """``crossbar-ep device plot CARD [--out PNG]``."""
    from crossbar_ep.cli_runs import check_output_file
    from crossbar_ep.plots.curves import plot_pulse_response
    out = args.out or os.path.splitext(os.path.basename(args.card))[0] + "_pulse_response.png"
    check_output_file(out, "PNG file")
    writing_figures(lambda: plot_pulse_response(card, out, args.devices, args.pulses,
                                                args.seed), f"device plot -o {out}",
                    files=[out])
    print(f"wrote {out}")
    return 0

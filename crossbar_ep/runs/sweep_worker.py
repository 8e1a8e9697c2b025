"""A local sweep worker process: ``python -m crossbar_ep.runs.sweep_worker FD [SWEEP_PID]``.

It reads one task per line from stdin (JSON: the arguments of
:func:`crossbar_ep.runs.sweep.run_point`), trains the point and writes its result row as one
JSON line to the file descriptor ``FD``; it ends at the end of its input.  The sweep
(:class:`crossbar_ep.runs.sweep_pool.LocalPool`) starts it in a process group of its own, so a
Ctrl-C at the terminal reaches the sweep alone, which stops its workers itself: SIGTERM
unwinds the point (files close) and ends the worker.  A worker whose sweep is gone without
stopping it (SIGKILL, a crash) is told at once on Linux (``PR_SET_PDEATHSIG``) and otherwise
notices within a quarter of a second; it unwinds as on SIGTERM, and leaves without unwinding
if the point has not returned to Python within :data:`ORPHAN_GRACE_S` (a long compiled
kernel), so the point's ``run.lock`` is free for a resumed sweep soon after.  Before each
point the worker resets its peak-memory mark, so a worker killed during a point (the
out-of-memory killer) reports that point's peak to the sweep.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time


ORPHAN_GRACE_S = 3.0     # s an orphaned worker waits for its point to unwind before leaving


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the sweep dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)      # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _end_with_parent(parent: int, every_s: float = 0.25) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_S)
    os._exit(143)                   # the point did not unwind in time: leave (locks drop)


def reset_peak_memory() -> bool:
    """Reset this process's peak resident memory mark (Linux ``clear_refs``); True if done."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def main(argv: list) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    parent = int(argv[2]) if len(argv) > 2 else os.getppid()     # the sweep's pid
    _die_with_parent()
    if os.getppid() != parent:          # the sweep died before the request took effect
        return 143
    threading.Thread(target=_end_with_parent, args=(parent,), daemon=True,
                     name="crossbar-ep-orphan-guard").start()
    out = os.fdopen(int(argv[1]), "w", encoding="utf-8")
    from crossbar_ep.runs.sweep import run_point
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            args = json.loads(line)
            reset_peak_memory()
            row = run_point(*args)
            out.write(json.dumps(row, default=str) + "\n")
            out.flush()
    except SystemExit:              # stopped by the sweep: leave at once
        os._exit(143)
    except (BrokenPipeError, KeyboardInterrupt):
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

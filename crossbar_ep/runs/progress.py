"""Progress display: a live bar on a terminal, a few plain lines in a log file.

On a terminal :func:`progress_bar` is a ``tqdm`` bar.  When the stream is not a terminal (a
batch job's log, ``2> log.txt``, a pipe) a bar would write one carriage-return update per
step; :class:`LogProgress` writes a line each time another ``every_percent`` of the work is
done or ``every_s`` seconds have passed, and one at the end.
"""

from __future__ import annotations

import sys
import time

EVERY_PERCENT = 10.0
EVERY_S = 60.0


class LogProgress:
    """tqdm's ``update`` / ``set_postfix`` / ``close`` as occasional plain lines."""

    def __init__(self, total: int, desc: str, unit: str, stream=None,
                 every_percent: float = EVERY_PERCENT, every_s: float = EVERY_S):
        self.total, self.desc, self.unit = max(0, int(total)), desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every = max(1, int(self.total * every_percent / 100.0))
        self.every_s = every_s
        self.n = self.last_n = 0
        self.t0 = self.last_t = time.monotonic()
        self.postfix = ""
        self.closed = False

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if self.n - self.last_n >= self.every or now - self.last_t >= self.every_s:
            self._line(now)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self, now: float) -> None:
        pct = 100.0 * self.n / self.total if self.total else 100.0
        tail = f", {self.postfix}" if self.postfix else ""
        try:
            units = self.unit + ("es" if self.unit.endswith(("ch", "s", "x")) else "s")
            print(f"{self.desc}: {pct:3.0f}% ({self.n}/{self.total} {units}, "
                  f"{now - self.t0:.0f} s{tail})", file=self.stream, flush=True)
        except (OSError, ValueError):      # a closed or broken log stream: stay quiet
            pass
        self.last_n, self.last_t = self.n, now

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n != self.last_n or self.postfix or self.n == 0:
                self._line(time.monotonic())


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def progress_bar(total: int, desc: str, unit: str, stream=None):
    """A tqdm bar on a terminal, else a :class:`LogProgress` on ``stream`` (stderr)."""
    stream = stream if stream is not None else sys.stderr
    if not is_terminal(stream):
        return LogProgress(total, desc, unit, stream)
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=True, file=stream, dynamic_ncols=True)

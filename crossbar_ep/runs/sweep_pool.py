"""Where a sweep's points run: worker processes on this machine (:class:`LocalPool`) or a
Dask cluster (:class:`DaskPool`); docs/sweeps.md, "Parallelism" and "Failures".

Both run a list of tasks and report each one, in the calling thread, to
``record(key, row, failure)``: ``row`` is the point's result (a dict), or ``failure`` a dict
with ``error`` (and, for a local worker that died, ``signal``, ``exit_code`` and
``peak_memory_MiB``).  A local worker that dies (killed by the out-of-memory killer or by
hand) fails the one point it was running; a new worker replaces it and the sweep goes on.
``stop`` (a threading.Event) ends a run early: local workers get SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from urllib.parse import urlsplit

from crossbar_ep.errors import ConfigError

STOP_GRACE_S = 3.0
PROBE_S = 5.0                  # TCP connect and first-bytes wait of a scheduler probe
CLIENT_TIMEOUT_S = 20.0        # Dask's own handshake, after the probe passed
MAX_HANDSHAKE_BYTES = 1 << 26  # a Dask handshake frame is a few kB


def _status_kib(pid, key: str) -> float | None:
    """A ``/proc/PID/status`` value in KiB (VmRSS, VmHWM); None where unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _package_root() -> str:
    import crossbar_ep
    return os.path.dirname(os.path.dirname(os.path.abspath(crossbar_ep.__file__)))


class _Worker:
    """One worker process (:mod:`crossbar_ep.runs.sweep_worker`) and its result pipe."""

    def __init__(self, env: dict):
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "crossbar_ep.runs.sweep_worker", str(w), str(os.getpid())],
                stdin=subprocess.PIPE, pass_fds=(w,), env=env, start_new_session=True)
        finally:
            os.close(w)
        self.fd, self.buf, self.key = r, b"", None
        self.parent_kib = _status_kib("self", "VmRSS") or 0.0   # counted in its ru_maxrss
        self.seen_kib = None       # its own high-water mark, sampled while it runs

    def sample(self) -> None:
        hwm = _status_kib(self.proc.pid, "VmHWM")
        if hwm is not None:
            self.seen_kib = hwm

    def send(self, key, args) -> None:
        self.key = key
        self.proc.stdin.write((json.dumps(list(args)) + "\n").encode("utf-8"))
        self.proc.stdin.flush()

    def read(self) -> list | None:
        """Complete result lines now available; None at end of file (the worker is gone)."""
        data = os.read(self.fd, 1 << 16)
        if not data:
            return None
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [json.loads(x) for x in lines if x.strip()]

    def reap(self) -> dict:
        """Wait for the ended worker; its exit status and peak memory."""
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            # ru_maxrss (KiB) holds the point's peak up to the kill, but never less than the
            # sweep's own size when it started the worker: then the last sample stands
            peak = usage.ru_maxrss if usage.ru_maxrss > 1.05 * self.parent_kib else \
                self.seen_kib
        except ChildProcessError:
            self.proc.wait()
            peak = self.seen_kib
        peak = peak / 1024.0 if peak else None
        code = self.proc.returncode
        info = {"exit_code": code, "peak_memory_MiB": peak}
        if code is not None and code < 0:
            info["signal"] = signal.Signals(-code).name
        return info

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass


def lost_text(info: dict) -> str:
    """The error of a point whose worker process died."""
    sig = info.get("signal")
    how = (f"was killed by {sig}" + (" (as the out-of-memory killer does)" if sig == "SIGKILL"
                                     else "") if sig else
           f"exited with status {info.get('exit_code')}")
    peak = info.get("peak_memory_MiB")
    mem = f"; its peak memory was {peak:.0f} MiB" if peak else ""
    return f"WorkerLost: the worker process running this point {how}{mem}"


class LocalPool:
    """``workers`` worker processes on this machine (BLAS threads split between them)."""

    def __init__(self, workers: int):
        self.n = workers
        cores = os.cpu_count() or 1
        env = dict(os.environ)
        env.setdefault("OPENBLAS_NUM_THREADS", str(max(1, cores // workers)))
        env.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
        self.env = env
        self.workers: list = []

    def run(self, tasks: list, record, stop) -> None:
        todo = list(tasks)
        sel = selectors.DefaultSelector()
        try:
            while (todo or any(w.key is not None for w in self.workers)) and not stop.is_set():
                idle = [w for w in self.workers if w.key is None]
                while todo and (idle or len(self.workers) < self.n):
                    w = idle.pop() if idle else self._spawn(sel)
                    key, args = todo.pop(0)
                    try:
                        w.send(key, args)
                    except OSError:          # died before taking it: noticed below
                        w.key = key
                for k, _ in sel.select(timeout=0.2):
                    self._collect(k.data, sel, record)
                for w in self.workers:
                    if w.key is not None:
                        w.sample()
        finally:
            if stop.is_set():
                self.stop()
            sel.close()

    def _spawn(self, sel) -> _Worker:
        w = _Worker(self.env)
        self.workers.append(w)
        sel.register(w.fd, selectors.EVENT_READ, w)
        return w

    def _collect(self, w: _Worker, sel, record) -> None:
        lines = w.read()
        for row in lines or []:
            key, w.key = w.key, None
            record(key, row, None)
        if lines is None:                     # the worker is gone
            sel.unregister(w.fd)
            self.workers.remove(w)
            info = w.reap()
            w.close()
            if w.key is not None:
                key, w.key = w.key, None
                record(key, None, {**info, "error": lost_text(info)})

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """End the running points now: SIGTERM, then SIGKILL after ``grace`` seconds.  A
        stopped point resumes from its last checkpoint."""
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.terminate()
        deadline = time.monotonic() + grace
        for w in self.workers:
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5.0)
            w.close()
        self.workers = []

    def close(self) -> None:
        """Let idle workers end (end of input) and wait for them."""
        for w in self.workers:
            w.close()
        for w in self.workers:
            try:
                w.proc.wait(10.0)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5.0)
        self.workers = []


# ---------------------------------------------------------------------- Dask
def check_scheduler(address: str) -> str:
    """A ``--scheduler`` address checked before anything is written: a known scheme, a host
    and a port, something listening there that speaks first like a Dask scheduler.  Returns
    the address as Dask takes it; raises ConfigError naming what is wrong."""
    text = address.strip()
    url = text if "://" in text else f"tcp://{text}"
    parts = urlsplit(url)
    fix = "give it as tcp://HOST:PORT (a Dask scheduler listens on 8786 by default)"
    if parts.scheme not in ("tcp", "tls"):
        raise ConfigError(f"--scheduler {address}: unknown scheme {parts.scheme!r}; {fix}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port is None or not 1 <= port <= 65535 or parts.path not in ("", "/"):
        raise ConfigError(f"--scheduler {address}: needs a host and a port from 1 to 65535; "
                          f"{fix}")
    try:
        sock = socket.create_connection((parts.hostname, port), timeout=PROBE_S)
    except OSError as exc:
        raise ConfigError(f"--scheduler {address}: cannot connect ({exc.strerror or exc}); "
                          f"is the scheduler running, and is the port right?") from None
    if parts.scheme == "tls":
        sock.close()
        return url
    try:
        sock.settimeout(PROBE_S)
        head = b""
        while len(head) < 8:
            got = sock.recv(8 - len(head))
            if not got:
                break
            head += got
    except OSError:
        head = b""
    finally:
        sock.close()
    n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
    if not 0 < n <= MAX_HANDSHAKE_BYTES:
        seen = f"it sent {head[:8]!r}" if head else f"it sent nothing within {PROBE_S:g} s"
        raise ConfigError(f"--scheduler {address}: something listens there but it is not a "
                          f"Dask scheduler ({seen}; port 8787 is usually the dashboard, the "
                          f"scheduler listens on 8786); {fix}")
    return url


class DaskPool:
    """An existing Dask scheduler (checked first) or a LocalCluster of ``n_local`` workers."""

    def __init__(self, address: str | None, n_local: int | None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("Dask scheduling needs dask.distributed: pip install "
                              "'dask[distributed]'") from None
        self.cluster = None
        if address:
            url = check_scheduler(address)
            try:
                self.client = Client(url, timeout=f"{CLIENT_TIMEOUT_S:g}s")
            except Exception as exc:  # noqa: BLE001 - any failed handshake is the same error
                raise ConfigError(f"--scheduler {address}: the Dask handshake failed "
                                  f"({type(exc).__name__}: {str(exc)[:200]})") from None
        else:
            self.cluster = LocalCluster(n_workers=n_local, threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)

    def run(self, tasks: list, record, stop) -> None:
        import queue

        from crossbar_ep.runs.sweep import run_point
        done = queue.Queue()
        futures = {}
        for key, args in tasks:
            fut = self.client.submit(run_point, *args, pure=False)
            futures[fut] = key
            fut.add_done_callback(done.put)
        left = len(futures)
        try:
            while left and not stop.is_set():
                try:
                    fut = done.get(timeout=0.2)
                except queue.Empty:
                    continue
                left -= 1
                exc = fut.exception()
                if exc is not None:
                    record(futures[fut], None, {"error": f"{type(exc).__name__}: {exc}"})
                else:
                    record(futures[fut], fut.result(), None)
        finally:
            if stop.is_set():
                self.stop(list(futures))

    def stop(self, futures=()) -> None:
        """Cancel every point; a LocalCluster's worker processes end with it.  A point
        already running on a remote cluster finishes there (Dask cannot interrupt it)."""
        try:
            self.client.cancel(list(futures), force=True)
        finally:
            self.close()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

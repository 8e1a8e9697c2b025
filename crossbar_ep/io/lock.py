"""Exclusive folder locks: an ``flock`` on a lock file, held while the lock object lives.

Run folders use ``run.lock`` and sweep folders ``sweep.lock`` (docs/runs.md, docs/sweeps.md).
The OS drops an ``flock`` when its process dies, even by SIGKILL, so a lock file left behind
never blocks.  The lock file is opened without following symbolic links and must be a regular
file: a ``run.lock`` that links elsewhere is refused, never truncated.
"""

from __future__ import annotations

import errno
import os
import weakref

from crossbar_ep.errors import CheckpointError
from crossbar_ep.io.files import UnsafeFileError, open_nofollow

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: folders are not locked
    fcntl = None

_HELD: dict = {}   # realpath of a lock file -> [descriptor, users]


class FolderLock:
    """An exclusive lock on ``folder/name``, re-entrant within one process (reopening a
    folder this process already holds shares the lock).

    ``what`` names the folder in messages ("run directory", "sweep folder"); ``fix`` is the
    advice given when another process holds it, ``unwritable`` when the folder is read-only.
    The lock file records the holder's pid.
    """

    def __init__(self, folder: str, name: str, what: str = "run directory",
                 fix: str = "wait for it to finish or stop it, or choose another --out",
                 unwritable: str = "make it writable, or choose another folder"):
        path = os.path.join(folder, name)
        key = os.path.join(os.path.realpath(folder), name)
        held = _HELD.get(key)
        if held is not None and _same_file(held[0], path):
            held[1] += 1
        else:
            _HELD[key] = [_acquire(folder, path, what, fix, unwritable), 1]
        self.path = path
        self._finalizer = weakref.finalize(self, _release, key, _HELD[key][0])

    def release(self) -> None:
        """Give the lock up now (otherwise when the object is collected)."""
        self._finalizer()


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _acquire(folder: str, path: str, what: str, fix: str, unwritable: str) -> int:
    name = os.path.basename(path)
    try:
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644, what=f"lock file of the {what}")
    except UnsafeFileError:
        raise
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot write in the {what} ({exc.strerror}); "
                              f"{unwritable}") from None
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise CheckpointError(f"{path}: cannot lock the {what} ({exc.strerror})") from None
        who = f"pid {pid}" if pid.isdigit() else "pid unknown"
        raise CheckpointError(f"{folder}: another process ({who}) is using this {what} "
                              f"(it holds {name}); {fix}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:       # a full disk: the lock holds without the pid
        pass
    return fd


def _release(key: str, fd: int) -> None:
    held = _HELD.get(key)
    if held is None or held[0] != fd:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[key]
        os.close(fd)   # closing the descriptor releases the flock

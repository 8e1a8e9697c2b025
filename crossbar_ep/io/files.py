"""Safe file primitives for run and sweep folders: atomic replacement, files opened without
following symbolic links, leftover temporary files (docs/limits.md, "Run directories").

A run folder may come from a tarball or another user: any name in it can be a symbolic link
to a file elsewhere, or a FIFO that blocks whoever opens it.  Files written by
:func:`atomic_write` are safe by construction (the rename replaces the link itself, never its
target).  Files that are opened in place (a lock file, an HDF5 file appended to) go through
:func:`check_plain` first, or are opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time

from crossbar_ep.errors import CrossbarEPError

TMP_PREFIX = ".tmp-"          # temporary files of atomic writes (removed when stale)
STALE_TMP_S = 3600.0          # a temporary file this old belongs to a process that died


class UnsafeFileError(CrossbarEPError):
    """A file the program would write in place is a symbolic link or not a regular file."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def check_plain(path: str, what: str = "file") -> bool:
    """True if ``path`` is a regular file, False if it does not exist; raises
    :class:`UnsafeFileError` for a symbolic link (even a dangling one), a folder, a FIFO, a
    socket or a device, naming what it is and the fix."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UnsafeFileError(f"{path}: cannot check the {what} ({exc.strerror})") from None
    if stat.S_ISREG(st.st_mode):
        return True
    rm = "rm -r" if stat.S_ISDIR(st.st_mode) else "rm"
    raise UnsafeFileError(f"{path}: the {what} is {_kind(st.st_mode)}, not a regular file; "
                          f"crossbar-ep never writes through links or into special files: "
                          f"remove it ({rm} {path}) or choose another folder")


def check_readable(path: str, what: str = "file") -> None:
    """Refuse a path that would block or mislead a reader: a FIFO, socket or device (a
    symbolic link to a regular file is fine for reading).  A missing path is left to the
    caller's own message."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise UnsafeFileError(f"{path}: the {what} is {_kind(st.st_mode)}, not a regular "
                              f"file; give a regular file")


def open_nofollow(path: str, flags: int, mode: int = 0o644, what: str = "file") -> int:
    """``os.open`` that refuses symbolic links and anything but a regular file."""
    check_plain(path, what)
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0),
                     mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:    # became a link after the check
            raise UnsafeFileError(f"{path}: the {what} is a symbolic link; remove it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFileError(f"{path}: the {what} is not a regular file; remove it")
    if hasattr(os, "O_NONBLOCK"):
        os.set_blocking(fd, True)
    return fd


def atomic_write(path: str, write) -> None:
    """Write ``path`` by calling ``write(binary file)`` on a temporary file in the same folder,
    fsync it, then rename it over ``path`` (a symbolic link there is replaced, its target is
    never touched).  On any failure the temporary file is removed and ``path`` is unchanged."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def atomic_text(path: str, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_copy(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` by :func:`atomic_write`; copying a file onto itself (the same
    file reached by another path) leaves it alone."""
    try:
        if os.path.exists(dst) and os.path.samefile(src, dst):
            return
    except OSError:
        pass
    with open(src, "rb") as fh:
        data = fh.read()
    atomic_write(dst, lambda out: out.write(data))


def temp_path(folder: str, suffix: str) -> str:
    """A new, unique temporary file name in ``folder`` (the file is created empty, so no
    other process gets the same name)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=suffix)
    os.close(fd)
    return tmp


def remove_stale_temps(folder: str, older_than_s: float = STALE_TMP_S,
                       everything: bool = False) -> list:
    """Delete temporary files (``.tmp-*``) that a killed writer left in ``folder``: those
    older than ``older_than_s``, or all of them with ``everything`` (the caller holds the
    folder's lock, so none is being written).  Returns the names removed."""
    gone = []
    try:
        names = os.listdir(folder)
    except OSError:
        return gone
    now = time.time()
    for name in names:
        if not name.startswith(TMP_PREFIX):
            continue
        p = os.path.join(folder, name)
        try:
            st = os.lstat(p)
            if not stat.S_ISDIR(st.st_mode) and (everything or now - st.st_mtime > older_than_s):
                os.unlink(p)
                gone.append(name)
        except OSError:
            continue
    return gone

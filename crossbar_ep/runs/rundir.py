"""Run directories: names, the exclusive lock, --out checks, the recorded config and its hash,
atomic writes (docs/runs.md, docs/limits.md)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
import weakref

from crossbar_ep.config.experiment import Config, config_from_dict, read_yaml
from crossbar_ep.errors import CheckpointError, ConfigError, CrossbarEPError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None

_HELD: dict = {}   # realpath of a run directory -> [fd of its lock file, users]
CHECKPOINT = "checkpoint.npz"


LOCK = "run.lock"


RUN_FILES = ("config.yaml", CHECKPOINT, "metrics.csv", "metrics.json", "curves.png",
             "summary.txt", "graph.json")


def check_name(cfg: Config) -> None:
    """``name`` becomes part of a folder name: no path separators or control characters."""
    n = cfg.name
    if any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in n) or os.path.isabs(n):
        import re
        safe = re.sub(r"[^\w.+-]+", "-", n).strip("-.") or "experiment"
        raise ConfigError(f"{cfg.source}: name: {n!r} is used in the run directory name and "
                          f"may not hold path separators (/ or \\) or control characters; "
                          f"use e.g. {safe!r}, or give the folder with --out")


def default_run_dir(cfg: Config, root: str = "runs") -> str:
    """``runs/<name>-<timestamp>`` (``-2``, ``-3``, ... when taken)."""
    check_name(cfg)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(root, f"{cfg.name}-{stamp}")
    path, i = base, 1
    while os.path.exists(path):
        i += 1
        path = f"{base}-{i}"
    return path


class _DirLock:
    """An exclusive ``flock`` on ``RUN_DIR/run.lock`` held while this object lives.

    The OS drops the lock when the process dies (even by SIGKILL), so a lock file left
    behind never blocks.  Re-entrant within one process: reopening a directory this process
    already holds (e.g. resume after an interrupted fit) shares the lock.
    """

    def __init__(self, out_dir: str):
        key = os.path.realpath(out_dir)
        held = _HELD.get(key)
        if held is not None and _same_file(held[0], os.path.join(key, LOCK)):
            held[1] += 1
        else:
            _HELD[key] = [_acquire(out_dir), 1]
        weakref.finalize(self, _release, key, _HELD[key][0])


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _acquire(out_dir: str) -> int:
    path = os.path.join(out_dir, LOCK)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CheckpointError(f"{out_dir}: cannot write in the run directory ({exc.strerror}); "
                              f"choose a writable folder with --out") from None
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise CheckpointError(f"{path}: cannot lock the run directory ({exc.strerror})") \
                from None
        who = f"pid {pid}" if pid.isdigit() else "pid unknown"
        raise CheckpointError(f"{out_dir}: another process ({who}) is using this run directory "
                              f"(it holds {LOCK}); wait for it to finish or stop it, or choose "
                              f"another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _release(key: str, fd: int) -> None:
    held = _HELD.get(key)
    if held is None or held[0] != fd:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[key]
        os.close(fd)   # closing the descriptor releases the flock


def _makedirs(out_dir: str) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise CheckpointError(f"{out_dir}: is a file, not a folder; choose another --out")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"{out_dir}: cannot create the run directory ({exc.strerror}); "
                              f"choose a writable place with --out") from None


def load_experiment(path: str, overrides: list | None = None) -> Config:
    """:func:`config.load_config` with unreadable files (a folder, not UTF-8) as ConfigError."""
    from crossbar_ep.config.experiment import load_config
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a folder, not an experiment file; give the YAML file "
                          f"(to continue a run directory: crossbar-ep run --resume {path})")
    return _reading(path, load_config, path, overrides)


def _reading(path: str, fn, *args):
    try:
        return fn(*args)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the "
                          f"file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None


def _run_config(out_dir: str) -> Config:
    """The validated ``config.yaml`` of a run directory."""
    if not os.path.isdir(out_dir):
        what = "no such folder" if not os.path.exists(out_dir) else "a file, not a folder"
        raise CheckpointError(f"{out_dir}: not a run directory ({what}); give the folder a run "
                              f"wrote (it holds config.yaml and {CHECKPOINT})")
    path = os.path.join(out_dir, "config.yaml")
    if not os.path.isfile(path):
        raise CheckpointError(f"{out_dir}: not a run directory (no config.yaml)")
    return _reading(path, lambda: config_from_dict(read_yaml(path), source=path))


def _config_yaml(cfg: Config) -> str:
    import yaml
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def hashed_config(cfg: Config) -> dict:
    """The resolved config whose hash identifies a run: every key but ``training.epochs``
    (the one key a resume may change: ``--epochs`` extends a run)."""
    d = cfg.to_dict()
    d["training"] = {k: v for k, v in d["training"].items() if k != "epochs"}
    return d


def config_hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode("utf-8")).hexdigest()


def config_changes(old: dict, new: dict, prefix: str = "") -> list:
    """``key: old -> new`` for every key whose value differs (sections flattened).  A section
    switched off (``enabled: false``) on both sides has no changes: its keys act on nothing
    (a default changed since, e.g. in the crossbar section of a digital run, does not block
    its resume)."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            if a.get("enabled") is False and b.get("enabled") is False:
                continue
            out += config_changes(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _changes_text(changes: list, most: int = 8) -> str:
    more = f"; and {len(changes) - most} more" if len(changes) > most else ""
    return "; ".join(changes[:most]) + more


def _check_out_dir(cfg: Config, out_dir: str, overwrite: bool) -> None:
    """Refuse to start in a folder that holds anything but a run of this same experiment
    (same resolved config, ``training.epochs`` aside) that stopped before its first
    checkpoint, unless ``overwrite``."""
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise CheckpointError(f"{out_dir}: is a file, not a folder; choose another --out")
    entries = sorted(e for e in os.listdir(out_dir) if e != LOCK and not e.startswith(".tmp-"))
    if not entries or overwrite:
        return
    try:
        old = _run_config(out_dir)
    except CrossbarEPError:   # not a run directory, or its config.yaml does not load
        old = None
    if old is None:
        more = f" and {len(entries) - 1} more" if len(entries) > 1 else ""
        raise CheckpointError(f"{out_dir}: the folder is not empty (it holds {entries[0]!r}"
                              f"{more}) and holds no run; choose a new or empty "
                              f"--out, or add --overwrite to write the run into it anyway")
    changes = config_changes(hashed_config(old), hashed_config(cfg))
    if changes:
        raise CheckpointError(f"{out_dir}: already holds a run of another config ("
                              f"{_changes_text(changes)}); choose another --out, or add "
                              f"--overwrite to replace that run")
    if os.path.exists(os.path.join(out_dir, CHECKPOINT)):
        raise CheckpointError(f"{out_dir}: already holds a run; use --resume {out_dir} to "
                              f"continue it, or choose another --out (--overwrite starts it "
                              f"again from scratch)")


def _remove_run_files(out_dir: str) -> None:
    """Delete the files an earlier run wrote here (other files are left alone)."""
    names = list(RUN_FILES)
    try:
        names.append(_run_config(out_dir).traces.file)
    except CrossbarEPError:
        names.append("traces.h5")
    for name in names:
        path = os.path.join(out_dir, name)
        if os.path.isfile(path) or os.path.islink(path):
            os.unlink(path)


def _atomic_write(path: str, write) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_text(path: str, text: str) -> None:
    _atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))

"""Run directories: :class:`RunDir` (its files, the exclusive lock, the recorded config and
its hash, the run's identity, atomic writes and checkpoint reads), run names and the
``--out`` checks (docs/runs.md, docs/limits.md)."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import time
import unicodedata
import uuid

from crossbar_ep.config.experiment import Config, config_from_dict, read_yaml
from crossbar_ep.errors import CheckpointError, ConfigError, CrossbarEPError
from crossbar_ep.io.files import (
    TMP_PREFIX,
    UnsafeFileError,
    atomic_text,
    atomic_write,
    check_plain,
    check_readable,
    remove_stale_temps,
)
from crossbar_ep.io.lock import FolderLock

CHECKPOINT = "checkpoint.npz"
LOCK = "run.lock"
IDENTITY = "run.json"       # the run's id and the hash of the config it was started with
RUN_FILES = ("config.yaml", CHECKPOINT, "metrics.csv", "metrics.json", "curves.png",
             "summary.txt", "graph.json", IDENTITY)
UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")   # control, format (bidi,
#                                         zero-width), surrogates, private use, unassigned


def unsafe_char(text: str) -> str | None:
    """The first character of ``text`` that may not appear in a name shown as a file name:
    control and format characters (bidi overrides, zero-width spaces), line separators,
    private-use, surrogate and unassigned code points; None if there is none."""
    for c in text:
        if unicodedata.category(c) in UNSAFE_CATEGORIES:
            return c
    return None


def check_name(cfg: Config) -> None:
    """``name`` becomes part of a folder name: no path separators, control or format
    characters (a bidi override makes ``gnp.exe`` display as ``exe.png``)."""
    n = cfg.name
    bad = unsafe_char(n)
    if any(c in "/\\" for c in n) or bad is not None or os.path.isabs(n):
        safe = re.sub(r"[^\w.+-]+", "-", n, flags=re.ASCII).strip("-.") or "experiment"
        what = f" (it holds U+{ord(bad):04X})" if bad is not None else ""
        raise ConfigError(f"{cfg.source}: name: {n!r} is used in the run directory name and "
                          f"may not hold path separators (/ or \\), control characters or "
                          f"invisible formatting characters{what}; use e.g. {safe!r}, or give "
                          f"the folder with --out")


def default_run_dir(cfg: Config, root: str = "runs") -> str:
    """``runs/<name>-<timestamp>`` (``-2``, ``-3``, ... when taken)."""
    check_name(cfg)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(root, f"{cfg.name}-{stamp}")
    path, i = base, 1
    while os.path.lexists(path):
        i += 1
        path = f"{base}-{i}"
    return path


def read_config_file(path: str, fn, *args):
    """``fn(*args)`` reading ``path``; unreadable files (not UTF-8, a FIFO) as ConfigError."""
    try:
        check_readable(path, "experiment file")
        return fn(*args)
    except UnsafeFileError as exc:
        raise ConfigError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the "
                          f"file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None


def load_experiment(path: str, overrides: list | None = None) -> Config:
    """:func:`config.load_config` with unreadable files (a folder, not UTF-8) as ConfigError."""
    from crossbar_ep.config.experiment import load_config
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a folder, not an experiment file; give the YAML file "
                          f"(to continue a run directory: crossbar-ep run --resume {path})")
    return read_config_file(path, load_config, path, overrides)


def config_yaml(cfg: Config) -> str:
    """The resolved config as the YAML a run directory's ``config.yaml`` holds."""
    import yaml
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


UNHASHED = {"training": ("epochs", "memory_limit_gib")}   # keys that do not change results


def hashed_config(cfg: Config) -> dict:
    """The resolved config whose hash identifies a run: every key but ``training.epochs``
    (the one key a resume may change: ``--epochs`` extends a run) and the memory check's
    limit (it changes no result)."""
    d = cfg.to_dict()
    for sec, keys in UNHASHED.items():
        d[sec] = {k: v for k, v in d[sec].items() if k not in keys}
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


def changes_text(changes: list, most: int = 8) -> str:
    """The first ``most`` changes joined for a message."""
    more = f"; and {len(changes) - most} more" if len(changes) > most else ""
    return "; ".join(changes[:most]) + more


def new_run_id() -> str:
    return uuid.uuid4().hex


class RunDir:
    """One run directory: file names, the lock, the recorded config, the run's identity
    (``run.json``: run id and config hash, also stamped into the checkpoint and the trace
    file), atomic writes and checkpoint reads.  Nothing is touched until a method is called."""

    def __init__(self, path: str):
        self.path = path

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # ------------------------------------------------------------------ lock
    def lock(self, resuming: bool = False) -> FolderLock:
        """The exclusive lock on ``run.lock`` (re-entrant within this process)."""
        if resuming:
            copy = f"{self.path.rstrip(os.sep)}-copy"
            unwritable = (f"continue a writable copy of it: cp -r {self.path} {copy} && "
                          f"crossbar-ep run --resume {copy}")
        else:
            unwritable = "choose a writable folder with --out"
        return FolderLock(self.path, LOCK, "run directory", unwritable=unwritable)

    def locked(self) -> bool:
        """True if a process (this one included) holds the lock now."""
        try:
            lock = FolderLock(self.path, LOCK)
        except CrossbarEPError:
            return True
        lock.release()
        return False

    # ------------------------------------------------------------------ config
    def config(self) -> Config:
        """The validated ``config.yaml``."""
        if not os.path.isdir(self.path):
            what = "no such folder" if not os.path.exists(self.path) else "a file, not a folder"
            raise CheckpointError(f"{self.path}: not a run directory ({what}); give the folder "
                                  f"a run wrote (it holds config.yaml and {CHECKPOINT})")
        path = self.file("config.yaml")
        if not os.path.isfile(path):
            raise CheckpointError(f"{self.path}: not a run directory (no config.yaml)")
        return read_config_file(path, lambda: config_from_dict(read_yaml(path), source=path))

    def make(self) -> bool:
        """Create the folder; True if it did not exist."""
        if os.path.lexists(self.path) and not os.path.isdir(self.path):
            raise CheckpointError(f"{self.path}: is a file, not a folder; choose another --out")
        if os.path.isdir(self.path):
            return False
        try:
            os.makedirs(self.path)
        except FileExistsError:
            return False
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot create the run directory "
                                  f"({exc.strerror}); choose a writable place with --out") \
                from None
        return True

    def check_out(self, cfg: Config, overwrite: bool) -> None:
        """Refuse to start in a folder that holds anything but a run of this same experiment
        (same resolved config, ``training.epochs`` aside) that stopped before its first
        checkpoint, unless ``overwrite``."""
        d = self.path
        if not os.path.lexists(d):
            return
        if not os.path.isdir(d):
            raise CheckpointError(f"{d}: is a file, not a folder; choose another --out")
        entries = sorted(e for e in os.listdir(d) if e != LOCK and not e.startswith(TMP_PREFIX))
        if not entries or overwrite:
            return
        try:
            old = self.config()
        except CrossbarEPError:   # not a run directory, or its config.yaml does not load
            old = None
        if old is None:
            more = f" and {len(entries) - 1} more" if len(entries) > 1 else ""
            raise CheckpointError(f"{d}: the folder is not empty (it holds {entries[0]!r}"
                                  f"{more}) and holds no run; choose a new or empty "
                                  f"--out, or add --overwrite to write the run into it anyway")
        changes = config_changes(hashed_config(old), hashed_config(cfg))
        if changes:
            raise CheckpointError(f"{d}: already holds a run of another config ("
                                  f"{changes_text(changes)}); choose another --out, or add "
                                  f"--overwrite to replace that run")
        if os.path.lexists(self.file(CHECKPOINT)):
            raise CheckpointError(f"{d}: already holds a run; use --resume {d} to continue "
                                  f"it, or choose another --out (--overwrite starts it again "
                                  f"from scratch)")

    def remove_run_files(self) -> None:
        """Delete the files an earlier run wrote here (other files are left alone; a
        symbolic link is removed, never its target)."""
        names = list(RUN_FILES)
        try:
            names.append(self.config().traces.file)
        except CrossbarEPError:
            names.append("traces.h5")
        for name in names:
            path = self.file(name)
            if os.path.isfile(path) or os.path.islink(path):
                os.unlink(path)

    def clean_temps(self, everything: bool = True) -> list:
        """Remove temporary files a killed write left (call while holding the lock)."""
        return remove_stale_temps(self.path, everything=everything)

    # ------------------------------------------------------------------ writes
    def write(self, name: str, write) -> None:
        """Atomic write of ``name`` by ``write(binary file)``."""
        atomic_write(self.file(name), write)

    def write_text(self, name: str, text: str) -> None:
        atomic_text(self.file(name), text)

    def check_plain(self, name: str, what: str) -> bool:
        """True if ``name`` is a regular file, False if absent; refuses links and special
        files (see :func:`crossbar_ep.io.files.check_plain`)."""
        return check_plain(self.file(name), what)

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict | None:
        """``run.json`` ({run_id, config_sha256, ...}); None if absent (a run directory
        written before identities were recorded) or unreadable."""
        try:
            with open(self.file(IDENTITY), encoding="utf-8") as fh:
                d = json.load(fh)
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) and isinstance(d.get("run_id"), str) else None

    def write_identity(self, run_id: str, sha: str) -> dict:
        from crossbar_ep import __version__
        d = {"run_id": run_id, "config_sha256": sha, "crossbar_ep_version": __version__,
             "written_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                 timespec="seconds")}
        self.write_text(IDENTITY, json.dumps(d, indent=1) + "\n")
        return d

    # ------------------------------------------------------------------ checkpoint
    def read_checkpoint(self, arrays: bool = True) -> tuple[dict, dict]:
        """(meta, arrays) of the checkpoint; ``arrays=False`` reads the meta only.  Every
        array is read (so a damaged file fails here, before anything is written)."""
        import numpy as np
        path = self.file(CHECKPOINT)
        try:
            check_plain(path, "checkpoint")
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                data = {k: z[k] for k in z.files if k != "meta"} if arrays else {}
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no checkpoint; the run stopped before its first "
                                  f"epoch ended: start it again without --resume") from None
        except UnsafeFileError as exc:
            raise CheckpointError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: unreadable checkpoint (its meta is not a mapping)")
        return meta, data

    def history(self) -> list | None:
        """The per-epoch rows the checkpoint holds (None without a readable checkpoint)."""
        try:
            meta, _ = self.read_checkpoint(arrays=False)
        except CrossbarEPError:
            return None
        h = meta.get("history")
        return h if isinstance(h, list) else None


def claim_for_api_traces(run_dir: str, trace_name: str) -> FolderLock:
    """For the Python API's trace callback (``crossbar_ep.api.Traces``): create ``run_dir``,
    take its lock and return it; refuse a folder that holds a run of the CLI (its
    ``run.json``, ``config.yaml`` or checkpoint) or a trace file the API did not write, so a
    callback pointed at the wrong folder cannot truncate another run's traces."""
    from crossbar_ep.io.trace_files import TraceError, reading
    rd = RunDir(run_dir)
    rd.make()
    lock = rd.lock()
    try:
        cli = [n for n in (IDENTITY, "config.yaml", CHECKPOINT) if os.path.lexists(rd.file(n))]
        if cli:
            raise CheckpointError(f"{run_dir}: holds a run of crossbar-ep run (it has "
                                  f"{cli[0]}); the Traces callback writes only into its own "
                                  f"folder: give it a new one")
        path = rd.file(trace_name)
        if rd.check_plain(trace_name, "trace file"):
            try:
                with reading(path) as f:
                    mine = f.attrs.get("written_by") == "python-api"
            except TraceError:
                mine = False
            if not mine:
                raise CheckpointError(f"{path}: a trace file the Python API did not write "
                                      f"(another run's, or not a trace file); the Traces "
                                      f"callback replaces only its own: move it away or give "
                                      f"another folder")
    except BaseException:
        lock.release()
        raise
    return lock

"""Stale Numba disk caches after a source edit: dropped before any kernel loads.

Numba keys a cached kernel (``cache=True``) on its own source file only.  A kernel that inlines
or calls a jitted function of another module (the pulse kernels inline the device models'
steps and the counter-based generator, the fit kernels the steps too) keeps running the old
code after that other module is edited, silently.  :func:`drop_stale_caches`, run when the
package is imported, fingerprints the sources of every module that uses Numba (SHA-256 of
their bytes) and, where the fingerprint differs from the one stored beside the caches,
deletes the package's cached kernels (``__pycache__/*.nbi``, ``*.nbc``) so that they compile
afresh.  Only the in-tree caches of a writable source tree (a development checkout) are
touched; an installed package's sources do not change.
"""

from __future__ import annotations

import glob
import hashlib
import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
STAMP = "numba-sources.sha256"


def sources_fingerprint(root: str) -> str:
    """SHA-256 over the paths and bytes of the ``.py`` files under ``root`` that use Numba."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
        with open(path, "rb") as f:
            data = f.read()
        if b"numba" in data:
            h.update(os.path.relpath(path, root).encode())
            h.update(data)
    return h.hexdigest()


def drop_stale_caches(root: str = PACKAGE_DIR) -> bool:
    """Delete the cached kernels under ``root`` when its Numba sources changed since the
    stamp was written (or there is no stamp); returns whether it deleted.  Never raises: a
    read-only tree, or a cache another process removes first, is left as it is."""
    try:
        digest = sources_fingerprint(root)
        stamp_dir = os.path.join(root, "__pycache__")
        stamp = os.path.join(stamp_dir, STAMP)
        try:
            with open(stamp) as f:
                if f.read().strip() == digest:
                    return False
        except OSError:
            pass
        if not os.access(root, os.W_OK):
            return False
        for pattern in ("*.nbi", "*.nbc"):
            for p in glob.glob(os.path.join(root, "**", "__pycache__", pattern), recursive=True):
                try:
                    os.remove(p)
                except OSError:
                    pass
        os.makedirs(stamp_dir, exist_ok=True)
        tmp = f"{stamp}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(digest + "\n")
        os.replace(tmp, stamp)
        return True
    except OSError:
        return False

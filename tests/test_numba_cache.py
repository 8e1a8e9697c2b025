"""Cached Numba kernels are dropped when a Numba source of the package changes (Numba keys a
kernel's cache on its own file only, so a kernel that inlines another module's step would
otherwise keep the old code)."""

import os

from crossbar_ep import numba_cache


def _tree(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub" / "__pycache__").mkdir(parents=True)
    (pkg / "steps.py").write_text("import numba\n\ndef step(w):\n    return w + 1\n")
    (pkg / "cli.py").write_text("print('no kernels here')\n")
    (pkg / "sub" / "kernel.py").write_text("from numba import njit\n")
    return pkg


def _cache(pkg):
    files = [pkg / "sub" / "__pycache__" / "kernel.pulse-10.py311.nbi",
             pkg / "sub" / "__pycache__" / "kernel.pulse-10.py311.1.nbc"]
    for f in files:
        f.write_bytes(b"cached")
    return files


def test_caches_survive_while_the_sources_stay_and_go_when_a_numba_source_changes(tmp_path):
    pkg = _tree(tmp_path)
    files = _cache(pkg)
    assert numba_cache.drop_stale_caches(str(pkg))          # no stamp yet: dropped
    assert not any(f.exists() for f in files)
    files = _cache(pkg)
    assert not numba_cache.drop_stale_caches(str(pkg))      # unchanged sources: kept
    assert all(f.exists() for f in files)
    (pkg / "cli.py").write_text("print('edited, still no kernels')\n")
    assert not numba_cache.drop_stale_caches(str(pkg))      # a non-Numba module: kept
    assert all(f.exists() for f in files)
    (pkg / "steps.py").write_text("import numba\n\ndef step(w):\n    return w + 2\n")
    assert numba_cache.drop_stale_caches(str(pkg))          # the step changed: dropped
    assert not any(f.exists() for f in files)
    assert (pkg / "__pycache__" / numba_cache.STAMP).read_text().strip() == \
        numba_cache.sources_fingerprint(str(pkg))


def test_a_read_only_tree_is_left_alone(tmp_path):
    pkg = _tree(tmp_path)
    files = _cache(pkg)
    os.chmod(pkg, 0o555)
    try:
        if os.access(pkg, os.W_OK):                           # running as root: cannot test
            return
        assert not numba_cache.drop_stale_caches(str(pkg))
        assert all(f.exists() for f in files)
    finally:
        os.chmod(pkg, 0o755)


def test_the_package_stamp_matches_its_sources():
    """Importing the package wrote the stamp of the sources it runs (or the tree is
    read-only)."""
    root = numba_cache.PACKAGE_DIR
    stamp = os.path.join(root, "__pycache__", numba_cache.STAMP)
    if os.access(root, os.W_OK):
        assert open(stamp).read().strip() == numba_cache.sources_fingerprint(root)

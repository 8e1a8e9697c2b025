"""Where data sets are looked up: the config's ``data.dir``, ``$CROSSBAR_EP_DATA``, the
per-user cache and the system's data sets (shared by the MNIST-family and CIFAR-10 loaders)."""

from __future__ import annotations

import os


def user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "crossbar-ep")


def search_bases(config_dir: str | None) -> list[tuple[str, str]]:
    """(origin, base folder) in lookup order."""
    bases = []
    if config_dir:
        bases.append(("data.dir in the config", config_dir))
    env = os.environ.get("CROSSBAR_EP_DATA")
    if env:
        bases.append(("$CROSSBAR_EP_DATA", env))
    bases.append(("per-user cache", user_cache_dir()))
    bases.append(("system data sets", "/usr/share/datasets"))
    return bases

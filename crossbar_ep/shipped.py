"""The device cards and experiments that ship with the package, found by name.

The repository keeps them in its top-level folders ``device_models/`` and ``experiments/``;
a wheel carries copies in ``crossbar_ep/_shipped/<folder>/`` (``setup.py`` copies them at
build time), side by side as in the repository, so the relative paths inside the files
(``device: device_models/CARD.yaml``, a sweep's ``base: ../EXPERIMENT.yaml``) resolve the
same way in both.  A source checkout or an editable install reads the repository's folders.

Names: a card is named by its file stem (``ecram_li_tang2018``, with or without ``.yaml``,
or as ``device_models/ecram_li_tang2018.yaml``); an experiment by its stem (``mnist_3hl``),
a sweep file by its stem or ``sweeps/<stem>``.  An existing file always wins over a name.
"""

from __future__ import annotations

import difflib
import os

from crossbar_ep.errors import ConfigError

CARDS = "device_models"
EXPERIMENTS = "experiments"
_PKG = os.path.dirname(os.path.abspath(__file__))


def shipped_dir(folder: str) -> str | None:
    """Absolute path of a shipped folder (``device_models`` or ``experiments``): the wheel's
    copy inside the package, else the source checkout's top-level folder; None if neither."""
    for root in (os.path.join(_PKG, "_shipped"), os.path.dirname(_PKG)):
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            return path
    return None


def _stems(folder: str | None) -> dict:
    """stem -> absolute path of the YAML files directly in ``folder``."""
    if folder is None or not os.path.isdir(folder):
        return {}
    return {f[:-5]: os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.endswith(".yaml") and os.path.isfile(os.path.join(folder, f))}


def card_names() -> dict:
    """Shipped device cards: name -> absolute path, sorted by name."""
    return _stems(shipped_dir(CARDS))


def experiment_names(sweeps: bool = False) -> dict:
    """Shipped experiments (``sweeps=False``) or sweep files (``True``: ``sweeps/*.yaml`` and
    the top-level ``sweep_*.yaml``): name -> absolute path."""
    root = shipped_dir(EXPERIMENTS)
    top = _stems(root)
    if not sweeps:
        return {k: v for k, v in top.items() if not k.startswith("sweep_")}
    found = {k: v for k, v in top.items() if k.startswith("sweep_")}
    found.update(_stems(os.path.join(root, "sweeps")) if root else {})
    return found


def _bare(ref: str, prefix: str) -> str | None:
    """The stem a reference names, or None when it is a path of another shape."""
    name = ref[len(prefix):] if ref.startswith(prefix) else ref
    if name.endswith((".yaml", ".yml")):
        name = name.rsplit(".", 1)[0]
    return None if ("/" in name or os.sep in name or not name) else name


def card_path(ref: str) -> str | None:
    """The shipped card a reference names (``NAME``, ``NAME.yaml`` or
    ``device_models/NAME.yaml``), or None."""
    name = _bare(ref, CARDS + "/") if isinstance(ref, str) else None
    return card_names().get(name) if name else None


def resolve_card(ref: str) -> str:
    """``ref`` if it is an existing file, else the shipped card it names, else ``ref``
    unchanged (the card loader then reports the missing file with the shipped names)."""
    if not isinstance(ref, str) or os.path.isfile(ref):
        return ref
    return card_path(ref) or ref


def resolve_experiment(ref: str, sweeps: bool = False) -> str:
    """``ref`` if it exists, else the shipped experiment (``sweeps=True``: sweep file first)
    it names.  A bare name that names nothing raises a ConfigError listing the shipped names;
    any other missing path is returned unchanged for the loader to report."""
    if not isinstance(ref, str) or os.path.exists(ref):
        return ref
    want_sweeps = sweeps or ref.startswith("sweeps/")
    name = _bare(ref, "sweeps/") if ref.startswith("sweeps/") else _bare(ref, "")
    if name is None:
        return ref
    primary, other = experiment_names(want_sweeps), experiment_names(not want_sweeps)
    for table in (primary, other):
        if name in table:
            return table[name]
    if ref.endswith((".yaml", ".yml")):
        return ref                        # a file name: the loader says it is missing
    close = difflib.get_close_matches(name, sorted(set(primary) | set(other)), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    kind = "sweep files" if want_sweeps else "experiments"
    raise ConfigError(f"{ref}: no such experiment file, and no shipped experiment or sweep of "
                      f"that name{hint} (shipped {kind}: {', '.join(primary) or 'none found'})")


def user_folder(path: str) -> str:
    """The folder that paths to the user's own files inside an experiment (a teacher's run
    directory, a data folder) are relative to: the experiment file's folder, except for a
    shipped file inside the installed package, which stands for ``./experiments/...`` of the
    working directory (so ``../runs/X`` is ``./runs/X`` there, as in the repository)."""
    folder = os.path.dirname(os.path.abspath(path))
    inside = os.path.join(_PKG, "_shipped") + os.sep
    if folder.startswith(inside):
        return os.path.join(os.getcwd(), os.path.relpath(folder, inside[:-1]))
    return folder

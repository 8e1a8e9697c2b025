"""The Python API's guards: the checks a config file gets, applied to keyword arguments and
arrays.

Keyword arguments are checked by the config schema itself (:mod:`crossbar_ep.schema`, the
section dataclasses and the cross-field checks of :mod:`crossbar_ep.config.validate`), so a
notebook and a YAML file meet the same ranges and the same messages, which name the function
and the argument (``make_network: model.hidden[0]: must be >= 1, got 0``).  Arrays get the
data checks of the CLI: shapes, finite values, integer labels inside the classes.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.errors import ConfigError, DataError


def options(cls, where: str, **kwargs):
    """The option dataclass ``cls`` (a config section) from keyword arguments, checked by the
    same schema as a config file: a bad value raises :class:`ConfigError` naming ``where``
    and the argument."""
    from crossbar_ep.schema import Where, build_section
    return build_section(cls, kwargs, Where(where, ""))


def check_section(obj, where: str) -> None:
    """Run every key's schema check on an already built section object (e.g. a
    ``Periphery(dac_bits=0)`` made by hand)."""
    from crossbar_ep.schema import Where, section_keys
    w = Where(where, type(obj).__name__)
    for f in section_keys(type(obj)):
        value = getattr(obj, f.name)
        if "section" in f.metadata:
            check_section(value, f"{where}.{f.name}")
        else:
            f.metadata["parse"](_plain(value), w.child(f.name))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def sizes_of(sizes, where: str) -> tuple:
    """Layer sizes ``(n_in, n_1, ..., n_L, n_out)`` as ints, at least one hidden layer."""
    try:
        if isinstance(sizes, (str, bytes)):
            raise TypeError
        out = tuple(sizes)
    except TypeError:
        raise ConfigError(f"{where}: sizes: expected a list (n_in, n_1, ..., n_L, n_out), got "
                          f"{type(sizes).__name__}") from None
    if len(out) < 3:
        raise ConfigError(f"{where}: sizes: give (n_in, n_1, ..., n_L, n_out) with at least one "
                          f"hidden layer, got {list(out)}")
    for i, n in enumerate(out):
        try:
            bad = isinstance(n, bool) or not float(n).is_integer() or int(n) < 1
        except (TypeError, ValueError, OverflowError):
            bad = True
        if bad:
            raise ConfigError(f"{where}: sizes[{i}]: a layer width is a positive integer, got "
                              f"{n!r}")
    return tuple(int(n) for n in out)


def check_inputs(x, n_in: int, dtype, where: str) -> np.ndarray:
    """Samples x as a C-contiguous (N, n_in) array of ``dtype``: finite, non-empty."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise DataError(f"{where}: x must hold numbers, got dtype {a.dtype}")
    if a.ndim != 2:
        hint = " (one sample: x[None])" if a.ndim == 1 and a.shape[0] == n_in else ""
        raise DataError(f"{where}: x must be (samples, {n_in}); got shape {a.shape}{hint}")
    if a.shape[1] != n_in:
        raise DataError(f"{where}: x has {a.shape[1]} features per sample; the network takes "
                        f"{n_in}")
    if a.shape[0] == 0:
        raise DataError(f"{where}: x holds no samples")
    a = np.ascontiguousarray(a, dtype=dtype)
    bad = ~np.isfinite(a)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{where}: x[{i}, {j}] is {a[i, j]} ({int(bad.sum())} values are not "
                        f"finite); clean or impute the data first")
    return a


def check_labels(y, n: int, n_classes: int, where: str) -> np.ndarray:
    """Integer labels (n,) inside 0..n_classes-1."""
    a = np.asarray(y)
    if a.shape != (n,):
        raise DataError(f"{where}: y must be (samples,) = ({n},), one integer label per row of "
                        f"x; got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise DataError(f"{where}: y must hold integer class labels, got non-integer "
                            f"values")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        raise DataError(f"{where}: y must hold integer class labels, got dtype {a.dtype}")
    bad = (a < 0) | (a >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where}: label {int(a[i])} at index {i} is outside the classes "
                        f"0..{n_classes - 1} ({int(bad.sum())} such labels)")
    return a.astype(np.int64, copy=False)


def check_batch_size(batch_size, where: str) -> int:
    if isinstance(batch_size, bool) or not float(batch_size).is_integer() or batch_size < 1:
        raise ConfigError(f"{where}: batch_size: a positive integer, got {batch_size!r}")
    return int(batch_size)

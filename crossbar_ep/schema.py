"""A small declarative schema: typed, frozen config sections with per-key docs and checks.

Every section is a frozen dataclass whose fields carry ``metadata`` made by :func:`key`:
a parser (type, range, choices), a one-line doc and a unit.  :func:`build_section` turns a
YAML mapping into the dataclass, naming the file and the key path (``model.hidden[2]``) in
every error and suggesting the closest allowed key for a misspelt one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from crossbar_ep.errors import ConfigError
from crossbar_ep.yamlio import clip

# Sanity ceilings: far above any real experiment, low enough that a typo (hidden: 1e9) fails
# validation instead of an allocation or a loop that never ends (docs/config.md).
MAX_UNITS = 100_000          # units per layer, input features, classes
MAX_LAYERS = 100             # hidden layers
MAX_SAMPLES = 1_000_000_000  # samples (subsets, splits, batches)
MAX_STEPS = 1_000_000        # settling steps per phase, epochs, pulses
MAX_SEED = 2**32 - 1         # seeds also feed NumPy's legacy seeding (< 2^32)
MAX_GAIN = 1.0e3             # learning rates, pulse gains, beta_i, beta_f, alpha
MAX_WEIGHTS = 1_000_000_000  # weights of the whole net
MAX_ACTIVATIONS = 1_000_000_000   # batch x hidden units, and synthetic samples x features
MAX_OHM = 1.0e9              # wire, driver and sense resistances
MIN_ATOL = {"float32": 1.0e-6, "float64": 1.0e-8}   # adaptive ODE floors (docs/limits.md)


@dataclass(frozen=True)
class Where:
    """Location of a value: the source file and the dotted key path inside it."""

    file: str
    path: str

    def child(self, name: str | int) -> "Where":
        if isinstance(name, int):
            return Where(self.file, f"{self.path}[{name}]")
        name = clip(name, 60)   # a key is echoed in every message below it
        return Where(self.file, f"{self.path}.{name}" if self.path else name)

    def fail(self, msg: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.path}: {msg}")


Parser = Callable[[Any, Where], Any]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return f"{clip(repr(value))} ({type(value).__name__})"


def p_int(lo: int | None = None, hi: int | None = None) -> Parser:
    def parse(v: Any, w: Where) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise w.fail(f"expected an integer, got {_describe(v)}")
        if lo is not None and v < lo:
            raise w.fail(f"must be >= {lo}, got {clip(v, 40)}")
        if hi is not None and v > hi:
            raise w.fail(f"must be <= {hi}, got {clip(v, 40)}")
        return int(v)

    parse.type_name = "int"  # type: ignore[attr-defined]
    parse.range = _range_text(lo, hi)  # type: ignore[attr-defined]
    return parse


def p_float(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            hi_open: bool = False) -> Parser:
    """A finite number in [lo, hi]; ``lo_open`` / ``hi_open`` exclude the bound."""
    def parse(v: Any, w: Where) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise w.fail(f"expected a number, got {_describe(v)}")
        v = float(v)
        if not math.isfinite(v):
            raise w.fail(f"must be finite, got {v}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise w.fail(f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
        if hi is not None and (v >= hi if hi_open else v > hi):
            raise w.fail(f"must be {'<' if hi_open else '<='} {hi:g}, got {v:g}")
        return v

    parse.type_name = "float"  # type: ignore[attr-defined]
    parse.range = _range_text(lo, hi, lo_open, hi_open)  # type: ignore[attr-defined]
    return parse


def p_bool() -> Parser:
    def parse(v: Any, w: Where) -> bool:
        if not isinstance(v, bool):
            raise w.fail(f"expected true or false, got {_describe(v)}")
        return v

    parse.type_name = "bool"  # type: ignore[attr-defined]
    return parse


def p_str() -> Parser:
    def parse(v: Any, w: Where) -> str:
        if not isinstance(v, str):
            raise w.fail(f"expected a string, got {_describe(v)}")
        return v

    parse.type_name = "string"  # type: ignore[attr-defined]
    return parse


def p_choice(*choices: str) -> Parser:
    def parse(v: Any, w: Where) -> str:
        if not isinstance(v, str) or v not in choices:
            hint = ""
            if isinstance(v, str):
                close = difflib.get_close_matches(v, choices, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
            raise w.fail(f"must be one of {', '.join(choices)}; got {_describe(v)}{hint}")
        return v

    parse.type_name = " \\| ".join(choices)  # type: ignore[attr-defined]
    return parse


def p_optional(inner: Parser) -> Parser:
    def parse(v: Any, w: Where) -> Any:
        return None if v is None else inner(v, w)

    parse.type_name = f"{getattr(inner, 'type_name', '?')} or null"  # type: ignore[attr-defined]
    parse.range = getattr(inner, "range", "")  # type: ignore[attr-defined]
    return parse


def p_list(inner: Parser, min_len: int = 0, max_len: int = 10_000) -> Parser:
    def parse(v: Any, w: Where) -> tuple:
        if not isinstance(v, (list, tuple)):
            raise w.fail(f"expected a list, got {_describe(v)}")
        if len(v) < min_len:
            raise w.fail(f"needs at least {min_len} entries, got {len(v)}")
        if len(v) > max_len:
            raise w.fail(f"takes at most {max_len} entries, got {len(v)}")
        return tuple(inner(x, w.child(i)) for i, x in enumerate(v))

    parse.type_name = f"list of {getattr(inner, 'type_name', '?')}"  # type: ignore[attr-defined]
    parse.range = getattr(inner, "range", "")  # type: ignore[attr-defined]
    return parse


def p_mapping(inner: Parser) -> Parser:
    """A mapping of names to values parsed by ``inner`` (a plain dict)."""
    def parse(v: Any, w: Where) -> dict:
        if not isinstance(v, dict):
            raise w.fail(f"expected a mapping of names to values, got {_describe(v)}")
        return {str(k): inner(x, w.child(str(k))) for k, x in v.items()}

    parse.type_name = f"mapping of {getattr(inner, 'type_name', '?')}"  # type: ignore[attr-defined]
    parse.range = getattr(inner, "range", "")  # type: ignore[attr-defined]
    return parse


def p_scalar_or_list(inner: Parser, max_len: int = 10_000) -> Parser:
    """One value for all layers, or a list with one value per layer."""

    as_list = p_list(inner, min_len=1, max_len=max_len)

    def parse(v: Any, w: Where) -> Any:
        if isinstance(v, (list, tuple)):
            return as_list(v, w)
        return inner(v, w)

    parse.type_name = f"{getattr(inner, 'type_name', '?')} or list"  # type: ignore[attr-defined]
    parse.range = getattr(inner, "range", "")  # type: ignore[attr-defined]
    return parse


def _range_text(lo: Any, hi: Any, lo_open: bool = False, hi_open: bool = False) -> str:
    def num(v: Any) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {num(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {num(hi)}")
    return ", ".join(parts)


def key(default: Any, doc: str, parse: Parser, unit: str = "-") -> Any:
    """Declare one config key of a section dataclass."""
    meta = {"doc": doc, "parse": parse, "unit": unit}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for defaults")
    return field(default=default, metadata=meta)


def section(cls: type, doc: str) -> Any:
    """Declare a nested section (its own frozen dataclass) inside another section."""
    return field(default_factory=cls, metadata={"doc": doc, "section": cls})


def build_section(cls: type, raw: Any, where: Where, shorthand: str | None = None) -> Any:
    """Parse the mapping ``raw`` into ``cls``; ``None`` means all defaults.

    ``shorthand`` names the key that a bare scalar sets (``residual: every-3``).
    """
    if raw is None:
        raw = {}
    if shorthand is not None and not isinstance(raw, dict):
        raw = {shorthand: raw}
    if not isinstance(raw, dict):
        raise where.fail(f"expected a mapping of keys, got {_describe(raw)}")
    fields = {f.name: f for f in section_keys(cls)}
    for k in raw:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise where.child(str(k)).fail(
                f"unknown key; {hint}(allowed: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        w = where.child(name)
        if "section" in f.metadata:
            sub = f.metadata["section"]
            values[name] = build_section(sub, raw.get(name), w,
                                         getattr(sub, "SHORTHAND", None))
        elif name in raw:
            values[name] = f.metadata["parse"](raw[name], w)
        else:
            values[name] = f.default
    return cls(**values)


def section_keys(cls: type) -> list:
    """The dataclass fields that are YAML keys or sections (not bookkeeping fields)."""
    return [f for f in dataclasses.fields(cls) if "parse" in f.metadata or "section" in f.metadata]


def to_plain(obj: Any) -> Any:
    """A config object as plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in section_keys(type(obj))}
    if isinstance(obj, (list, tuple)):
        return [to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def reference_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, unit, doc) for every key, sections flattened, for the docs."""
    rows = []
    for f in section_keys(cls):
        name = f"{prefix}{f.name}"
        if "section" in f.metadata:
            rows.extend(reference_rows(f.metadata["section"], name + "."))
            continue
        parse = f.metadata["parse"]
        type_name = getattr(parse, "type_name", "")
        rng = getattr(parse, "range", "")
        if rng:
            type_name += f" ({rng})"
        default = to_plain(f.default)
        default_text = "null" if default is None else str(default).replace("'", "")
        if isinstance(default, bool):
            default_text = str(default).lower()
        rows.append((name, type_name, default_text, f.metadata["unit"], f.metadata["doc"]))
    return rows


def parse_tile(spec: str) -> tuple[str, int, int]:
    """'W1:0:1' -> ('W1', 0, 1): matrix, row-tile index, column-tile index."""
    parts = spec.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"{spec!r}: expected MATRIX:ROW_TILE:COL_TILE, e.g. W1:0:0")
    return parts[0], int(parts[1]), int(parts[2])

"""Sweep files: validation, the points a sweep plans (grid, zip, random draws, seeds,
references), bounded before anything is built, and the config hashes and differences that
``--resume`` checks (docs/sweeps.md)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from crossbar_ep import shipped
from crossbar_ep.config.experiment import apply_overrides, config_from_dict, read_yaml
from crossbar_ep.errors import ConfigError

SWEEP_KEYS = ("name", "description", "base", "set", "grid", "zip", "random", "seeds",
              "reference")


MAX_POINTS_ENV = "CROSSBAR_EP_MAX_SWEEP_POINTS"


DEFAULT_MAX_POINTS = 100_000


MAX_FILE_VALUES = 1_000_000         # values in a sweep or base file once aliases are expanded


@dataclass
class Point:
    """One run of the sweep: the varied values (path -> value) and its seed."""

    index: int
    params: dict
    seed: int | None
    kind: str = "point"          # or "reference": the ideal digital run of the base
    overrides: list = field(default_factory=list)
    config_hash: str = ""

    @property
    def point_id(self) -> str:
        text = json.dumps([self.kind, self.params, self.seed], sort_keys=True, default=str)
        return f"p{self.index:04d}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


@dataclass
class Sweep:
    name: str
    source: str
    base: str                    # absolute path of the base experiment
    fixed: dict
    axes: list                   # varied key paths, in order
    points: list
    content: dict = field(default_factory=dict)      # the sweep file, paths resolved
    base_config: dict = field(default_factory=dict)  # the base experiment, resolved
    cards: dict = field(default_factory=dict)        # device card path -> SHA-1


def _fail(source: str, path: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {path}: {msg}")


def _as_override(path: str, value) -> str:
    return f"{path}={json.dumps(value)}"


def _resolve_paths(path: str, value, folder: str):
    """Device cards and data dirs given relative to the sweep file become absolute."""
    if path in ("crossbar.device", "data.dir") and isinstance(value, str) \
            and not os.path.isabs(value):
        cand = os.path.join(folder, value)
        if os.path.exists(cand):
            return os.path.abspath(cand)
        if os.path.exists(value):
            return os.path.abspath(value)
    return value


def _draw(spec, rng: np.random.Generator, where: str, source: str):
    if not isinstance(spec, dict) or len(spec) != 1:
        raise _fail(source, where, "give one of {uniform: [lo, hi]}, {log_uniform: [lo, hi]}, "
                                   "{int: [lo, hi]}, {choice: [a, b, ...]}")
    (kind, arg), = spec.items()
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise _fail(source, f"{where}.choice", "needs a non-empty list")
        return arg[int(rng.integers(len(arg)))]
    if kind not in ("uniform", "log_uniform", "int"):
        raise _fail(source, where, f"unknown distribution {kind!r} (uniform, log_uniform, int, "
                                   f"choice)")
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, (int, float))
                                                             for a in arg) and arg[0] < arg[1]):
        raise _fail(source, f"{where}.{kind}", "needs [lo, hi] with lo < hi")
    lo, hi = arg
    if kind == "uniform":
        return float(rng.uniform(lo, hi))
    if kind == "int":
        return int(rng.integers(int(lo), int(hi) + 1))
    if lo <= 0:
        raise _fail(source, f"{where}.log_uniform", "needs lo > 0")
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def max_points() -> int:
    """The most points a sweep may have: ``$CROSSBAR_EP_MAX_SWEEP_POINTS`` or 100000."""
    text = os.environ.get(MAX_POINTS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_POINTS
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"${MAX_POINTS_ENV}={text!r}: needs a positive whole number (the most "
                          f"points a sweep may have; default {DEFAULT_MAX_POINTS})")
    return n


def _check_size(obj, source: str, limit: int = MAX_FILE_VALUES) -> None:
    """Refuse data that expands to more than ``limit`` values (YAML aliases can make a few
    lines stand for billions of values, or a loop); stops walking at the limit."""
    stack, seen = [(obj, "")], 0
    while stack:
        x, where = stack.pop()
        seen += 1
        if seen > limit:
            raise ConfigError(f"{source}: {where or 'the file'}: holds more than {limit} values "
                              f"once YAML aliases (*name) are expanded, or refers to itself; "
                              f"write the values out, or split the file")
        if isinstance(x, dict):
            for k, v in x.items():
                stack.append((k, where))
                stack.append((v, where if "." in where else f"{where}.{k}".lstrip(".")))
        elif isinstance(x, (list, tuple)):
            stack.extend((v, where) for v in x)


def _random_n(rand: dict, source: str, limit: int) -> int:
    n = rand.get("n")
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise _fail(source, "random.n", f"needs a whole number of samples from 1 to {limit} "
                                        f"(got {n!r}); more points need "
                                        f"${MAX_POINTS_ENV} raised")
    return n


def _count_points(source: str, grid: dict, zipped: dict, n_random: int, seeds: list,
                  reference: bool, limit: int) -> int:
    """The number of points, by arithmetic: nothing is built before it passes the limit."""
    sizes = [len(v) for v in grid.values()]
    n = math.prod(sizes) * (len(next(iter(zipped.values()))) if zipped else 1) * n_random
    n = n * len(seeds) + (len(seeds) if reference else 0)
    if n > limit:
        parts = [f"grid {' x '.join(map(str, sizes))}" if sizes else "",
                 f"zip rows {len(next(iter(zipped.values())))}" if zipped else "",
                 f"random.n {n_random}" if n_random > 1 else "", f"seeds {len(seeds)}"]
        raise ConfigError(f"{source}: grid x zip x random x seeds: the sweep has {n} points "
                          f"({', '.join(p for p in parts if p)}), more than the limit of "
                          f"{limit}; split the sweep, or raise the limit with "
                          f"{MAX_POINTS_ENV}={n} in the environment")
    return n


def _card_digest(device, base: str, cache: dict) -> str:
    """SHA-1 of the device card a config names (found as load_config finds it), or ''."""
    if not isinstance(device, str):
        return ""
    folder = os.path.dirname(base)
    tries = [device] if os.path.isabs(device) else [
        os.path.join(folder, device), device, os.path.join(folder, os.pardir, device)]
    path = next((os.path.abspath(t) for t in tries if os.path.isfile(t)), None)
    path = path or shipped.card_path(device)          # a shipped card given by name
    if path is None:
        return ""
    if path not in cache:
        with open(path, "rb") as fh:
            cache[path] = hashlib.sha1(fh.read()).hexdigest()
    return cache[path]


def config_hash(cfg, base: str, cards: dict) -> str:
    """Hash of a point's resolved config (every key, defaults filled in), its base
    experiment's location and its device card's contents: equal hashes, same run."""
    text = json.dumps([cfg.to_dict(), os.path.abspath(base),
                       _card_digest(cfg.crossbar.device, base, cards)],
                      sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_sweep(path: str) -> Sweep:
    """Read and validate a sweep file; every point's config is checked before anything runs.

    The points are counted before any is built (limit: :func:`max_points`)."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep file must be a mapping (base, grid, zip, random, "
                          f"seeds, ...)")
    _check_size(raw, path)
    for k in raw:
        if k not in SWEEP_KEYS:
            import difflib
            close = difflib.get_close_matches(str(k), SWEEP_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise _fail(path, str(k), f"unknown key; {hint}(allowed: {', '.join(SWEEP_KEYS)})")
    folder = os.path.dirname(os.path.abspath(path))
    if "base" not in raw or not isinstance(raw["base"], str):
        raise _fail(path, "base", "missing: name the base experiment file")
    base = raw["base"] if os.path.isabs(raw["base"]) else os.path.join(folder, raw["base"])
    if not os.path.isfile(base):
        raise _fail(path, "base", f"{base}: no such experiment file")
    sections = {}
    for sec in ("set", "grid", "zip"):
        v = raw.get(sec) or {}
        if not isinstance(v, dict):
            raise _fail(path, sec, "expected a mapping of key paths")
        sections[sec] = v
    seen = {}
    for sec in ("set", "grid", "zip"):
        for key in sections[sec]:
            if key in seen:
                raise _fail(path, f"{sec}.{key}", f"also set in {seen[key]}: a key may be "
                                                  f"varied (or fixed) in one place only")
            seen[key] = sec
    for key, vals in {**sections["grid"], **sections["zip"]}.items():
        sec = seen[key]
        if not isinstance(vals, list) or not vals:
            raise _fail(path, f"{sec}.{key}", "needs a non-empty list of values")
    zip_lens = {len(v) for v in sections["zip"].values()}
    if len(zip_lens) > 1:
        raise _fail(path, "zip", f"lists have different lengths {sorted(zip_lens)}; zipped "
                                 f"keys vary together and need equal lengths")
    limit = max_points()
    rand = raw.get("random") or {}
    rand_params, n_random = {}, 1
    if rand:
        if not isinstance(rand, dict) or "params" not in rand or not rand["params"] \
                or not isinstance(rand["params"], dict):
            raise _fail(path, "random", "needs params: {key.path: {distribution: ...}} and n")
        n_random = _random_n(rand, path, limit)
        for key in rand["params"]:
            if key in seen:
                raise _fail(path, f"random.params.{key}", f"also set in {seen[key]}")
            seen[key] = "random"
        rand_params = rand["params"]
    seeds = raw.get("seeds", [None])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(
            s is None or (isinstance(s, int) and s >= 0) for s in seeds):
        raise _fail(path, "seeds", "needs a non-empty list of non-negative integers")
    for reserved in ("training.seed", "crossbar.seed"):
        if reserved in seen and seeds != [None]:
            raise _fail(path, f"{seen[reserved]}.{reserved}", "conflicts with seeds: "
                                                               "seeds set it")
    _count_points(path, sections["grid"], sections["zip"], n_random, seeds,
                  bool(raw.get("reference")), limit)

    fixed = {k: _resolve_paths(k, v, folder) for k, v in sections["set"].items()}
    grid = {k: [_resolve_paths(k, x, folder) for x in v] for k, v in sections["grid"].items()}
    zipped = {k: [_resolve_paths(k, x, folder) for x in v] for k, v in sections["zip"].items()}
    combos = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())] or [{}]
    zrows = ([dict(zip(zipped, vals)) for vals in zip(*zipped.values())] if zipped else [{}])
    rrows = [{}]
    if rand_params:
        rng = np.random.default_rng(rand.get("seed", 0))
        rrows = [{k: _resolve_paths(k, _draw(spec, rng, f"random.params.{k}", path), folder)
                  for k, spec in rand_params.items()} for _ in range(n_random)]
    axes = [*grid, *zipped, *rand_params]
    points = []
    for params in (dict(**g, **z, **r) for g in combos for z in zrows for r in rrows):
        for seed in seeds:
            points.append(Point(len(points), params, seed))
    if raw.get("reference"):
        for seed in seeds:
            points.append(Point(len(points), {}, seed, kind="reference"))
    base_raw = read_yaml(base)
    _check_size(base_raw, base)
    fixed_ov = [_as_override(k, v) for k, v in fixed.items()]
    base_fixed = apply_overrides(base_raw if isinstance(base_raw, dict) else {}, fixed_ov)
    cards = {}
    for p in points:
        ov = [_as_override(k, v) for k, v in p.params.items()]
        if p.seed is not None:
            ov += [f"training.seed={p.seed}", f"crossbar.seed={p.seed}"]
        if p.kind == "reference":
            ov += ["crossbar.enabled=false", "traces.tiles=[]"]
        p.overrides = fixed_ov + ov
        try:
            cfg = config_from_dict(apply_overrides(base_fixed, ov), base)
        except ConfigError as exc:
            where = ", ".join(f"{k}={v!r}" for k, v in p.params.items()) or p.kind
            raise ConfigError(f"{path}: point {p.index} ({where}): {exc}") from None
        p.config_hash = config_hash(cfg, base, cards)
    name = raw.get("name") or os.path.splitext(os.path.basename(path))[0]
    content = {k: v for k, v in raw.items() if k not in ("name", "description")}
    content.update(base=os.path.abspath(base), set=fixed, grid=grid, zip=zipped)
    return Sweep(str(name), os.path.abspath(path), os.path.abspath(base), fixed, axes, points,
                 content, _plain_base(base_raw, base), cards)


def _plain_base(base_raw, base: str) -> dict:
    """The base experiment resolved (defaults filled in), for listing what changed."""
    try:
        return config_from_dict(base_raw, base).to_dict()
    except ConfigError:     # a base that only validates with the sweep's overrides
        return base_raw if isinstance(base_raw, dict) else {}


def _flat(d, prefix: str = "") -> dict:
    """Nested mappings as {dotted.key: value}; lists stay whole."""
    if not isinstance(d, dict) or (prefix and not d):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _show(v) -> str:
    text = "(absent)" if v is _ABSENT else json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


_ABSENT = object()


def config_diff(old: dict, new: dict, prefix: str = "") -> list:
    """``key: old -> new`` for every key whose value differs."""
    a, b = _flat(json.loads(json.dumps(old, default=str))), \
        _flat(json.loads(json.dumps(new, default=str)))
    return [f"{prefix}{k}: {_show(a.get(k, _ABSENT))} -> {_show(b.get(k, _ABSENT))}"
            for k in sorted(set(a) | set(b), key=str) if a.get(k, _ABSENT) != b.get(k, _ABSENT)]

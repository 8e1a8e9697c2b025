"""YAML loading with YAML 1.2 numbers (``1e-3`` is a float) and bounded work for any input.

PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent (``1.0e-3``), so
``lr: 1e-3`` would load as the string '1e-3'.  Physicists write exponents freely; this loader
accepts them.

Every document is checked before it is built: aliases may not expand it to more than
``$CROSSBAR_EP_YAML_MAX_NODES`` nodes (default 100,000; a 400-byte "billion laughs" file
would otherwise expand to 10^9), nor nest it deeper than :data:`MAX_DEPTH`; files above
``$CROSSBAR_EP_YAML_MAX_BYTES`` (default 1 MB; experiments are a few kB) are not read.
"""

from __future__ import annotations

import os
import re

import yaml

from crossbar_ep.errors import ConfigError

MAX_NODES_ENV, MAX_NODES = "CROSSBAR_EP_YAML_MAX_NODES", 100_000
MAX_BYTES_ENV, MAX_BYTES = "CROSSBAR_EP_YAML_MAX_BYTES", 1_000_000   # ~1 s to parse
MAX_DEPTH = 64   # nesting levels after alias expansion (a config needs about 5)


class Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats that stops composing after ``max_nodes`` nodes."""

    max_nodes = MAX_NODES

    def compose_node(self, parent, index):
        self.composed = getattr(self, "composed", 0) + 1   # alias uses count too
        if self.composed > self.max_nodes:
            raise _too_many(self.name, self.max_nodes)
        return super().compose_node(parent, index)


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)

Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                  for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def clip(text: str, n: int = 200) -> str:
    """``text`` cut to ``n`` characters, with '...' when cut (for values echoed in errors)."""
    text = str(text)
    return text if len(text) <= n else text[:n] + "..."


def limit(env: str, default: int) -> int:
    """A positive integer limit from the environment variable ``env``, else ``default``."""
    text = os.environ.get(env, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"${env}={clip(text)!r}: give a positive integer (default {default})")
    return value


def _too_many(name: str, max_nodes: int) -> ConfigError:
    return ConfigError(
        f"{name}: more than {max_nodes} YAML nodes once aliases (*name) are expanded; refused "
        f"so that a small file cannot take unbounded time and memory. If the file is genuine, "
        f"raise the limit: export {MAX_NODES_ENV}=N")


def _check_size(root: yaml.Node, name: str, max_nodes: int) -> None:
    """Refuse a node graph whose expansion (aliases copied out) is too big or too deep."""
    memo: dict = {}      # id(node) -> (expanded nodes, height)
    active: set = set()  # nodes on the current path: meeting one again is a recursive alias

    def walk(node: yaml.Node, depth: int) -> tuple[int, int]:
        if depth > MAX_DEPTH:
            raise ConfigError(f"{name}: nested deeper than {MAX_DEPTH} levels; an experiment "
                              f"needs about 5")
        got = memo.get(id(node))
        if got is None:
            if id(node) in active:
                raise ConfigError(f"{name}: recursive alias (an anchor used inside its own "
                                  f"value, line {node.start_mark.line + 1}); write the value out")
            active.add(id(node))
            kids = node.value if isinstance(node, yaml.SequenceNode) else (
                [n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode)
                else [])
            size, height = 1, 0
            for kid in kids:
                s, h = walk(kid, depth + 1)
                size, height = size + s, max(height, h + 1)
            active.discard(id(node))
            got = memo[id(node)] = (size, height)
        if got[0] > max_nodes:
            raise _too_many(name, max_nodes)
        if depth + got[1] > MAX_DEPTH:
            raise ConfigError(f"{name}: nested deeper than {MAX_DEPTH} levels once aliases are "
                              f"expanded; an experiment needs about 5")
        return got

    walk(root, 0)


def load(stream, name: str | None = None):
    """Parse one YAML document with :class:`Loader`, within the size limits.

    Raises ``yaml.YAMLError`` for invalid YAML and :class:`ConfigError` (naming ``name``,
    by default the stream's file name) for a document over the limits or a value that
    cannot be converted.
    """
    name = name or getattr(stream, "name", "<string>")
    max_nodes = limit(MAX_NODES_ENV, MAX_NODES)
    loader = Loader(stream)
    loader.name = name   # marks in YAML errors name the file, not '<unicode string>'
    loader.max_nodes = max_nodes
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, name, max_nodes)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{name}: nested too deeply to read; an experiment needs about 5 "
                          f"levels") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start}); save the file as UTF-8") from None
    except (ValueError, OverflowError) as exc:   # e.g. an integer of 5000 digits
        raise ConfigError(f"{name}: a value cannot be converted ({clip(exc, 100)}); check "
                          f"the numbers in it") from None
    finally:
        loader.dispose()


def load_file(path: str, what: str = "YAML file"):
    """Read and parse the YAML file ``path`` (UTF-8, at most ``$CROSSBAR_EP_YAML_MAX_BYTES``).

    Errors as :func:`load`, plus :class:`ConfigError` for a directory, an unreadable or
    oversized file.
    """
    max_bytes = limit(MAX_BYTES_ENV, MAX_BYTES)
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a directory; give the {what} itself")
    if os.path.exists(path) and not os.path.isfile(path):     # a FIFO would block the read
        raise ConfigError(f"{path}: not a regular file (a FIFO, socket or device); give the "
                          f"{what} itself")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ConfigError(f"{path}: larger than {max_bytes} bytes; refused as a {what}. If the "
                          f"file is genuine, raise the limit: export {MAX_BYTES_ENV}=N")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start}); save the file as UTF-8") from None
    return load(text, path)

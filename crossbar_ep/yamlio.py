"""YAML loading with YAML 1.2 numbers: ``1e-3`` and ``26.0e6`` are floats.

PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent (``1.0e-3``), so
``lr: 1e-3`` would load as the string '1e-3'.  Physicists write exponents freely; this loader
accepts them.
"""

from __future__ import annotations

import re

import yaml


class Loader(yaml.SafeLoader):
    pass


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)

Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                  for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load(stream):
    """Parse one YAML document with :class:`Loader`."""
    return yaml.load(stream, Loader=Loader)  # noqa: S506 - Loader derives from SafeLoader

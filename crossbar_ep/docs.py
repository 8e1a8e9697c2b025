"""Generate ``docs/config.md`` (the config reference) from the schema.

    python -m crossbar_ep.docs            # rewrite docs/config.md
    python -m crossbar_ep.docs --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import dataclasses
import os
import sys

from .config import Config
from .schema import reference_rows

HEADER = """# Experiment config reference

Generated from `crossbar_ep/config.py` by `python -m crossbar_ep.docs`; do not edit by hand.

An experiment file is YAML with the sections below; every key is optional and takes the
default shown.  Unknown keys, wrong types, out-of-range values and inconsistent combinations
are rejected with the file name and key path, e.g.
`experiments/x.yaml: model.hidden[2]: must be >= 1, got -3`.  Override any key on the command
line with `--set section.key=value` (the value is parsed as YAML: `--set model.hidden=[64,64]`).

Cross-field rules: `training.T` >= number of hidden layers; a per-layer `model.beta_i` has one
value per hidden layer and a per-matrix `training.lr` has L+1 (W_0 .. W_{L-1}, W_f); residual
pairs lie inside 1..L, go upward (from < to) and skip at least one layer; `every-3` needs
L >= 4; `agt` needs `model.feedback: random`; `settling.dt_over_tau` only with `mode: ode`;
`update_norm: normalised` needs every beta_i > 0.
"""


def render() -> str:
    out = [HEADER]
    for f in dataclasses.fields(Config):
        if "section" not in f.metadata:
            continue
        out.append(f"\n## `{f.name}`: {f.metadata['doc']}\n")
        out.append("| key | type | default | unit | meaning |")
        out.append("|---|---|---|---|---|")
        for k, t, d, u, doc in reference_rows(f.metadata["section"], f.name + "."):
            out.append(f"| `{k}` | {t} | `{d}` | {u} | {doc} |")
    top = [r for r in reference_rows(Config) if "." not in r[0]]
    out.append("\n## Top-level keys\n")
    out.append("| key | type | default | unit | meaning |")
    out.append("|---|---|---|---|---|")
    for k, t, d, u, doc in top:
        out.append(f"| `{k}` | {t} | `{d}` | {u} | {doc} |")
    return "\n".join(out) + "\n"


def main() -> int:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "docs", "config.md")
    text = render()
    if "--check" in sys.argv:
        with open(path, encoding="utf-8") as fh:
            ok = fh.read() == text
        print("docs/config.md is up to date" if ok else
              "docs/config.md is stale: run python -m crossbar_ep.docs")
        return 0 if ok else 1
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

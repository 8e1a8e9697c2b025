"""The results trail: the README's results table is what `crossbar-ep summary` makes of the
committed files, every file a doc names under docs/results/ or docs/figures/ exists, and every
committed result file is listed with its command in docs/results/README.md."""

import glob
import os
import re

import pytest

from crossbar_ep import cli
from crossbar_ep.runs.doc_tables import block_text, read_block
from crossbar_ep.runs.summary import expand_paths, parse_epochs, summary_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a path under results/ or figures/ (optionally docs/-rooted or ../-relative), not part of a
# longer path such as runs/x/figures/...
_REF = re.compile(r"(?<![\w/.~-])((?:\.\./)*(?:docs/)?(?:results|figures)/[\w.*?{},/\-\[\]]+)")


def _docs():
    out = [os.path.join(ROOT, "README.md")]
    out += sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    return out


def _braces(p: str) -> list:
    m = re.search(r"\{([^{}]*)\}", p)
    if not m:
        return [p]
    return [q for alt in m[1].split(",") for q in _braces(p[:m.start()] + alt + p[m.end():])]


def named_files(doc: str) -> list:
    """(reference as written, absolute path or pattern) of every results/figures path."""
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    out = []
    for m in _REF.finditer(text):
        ref = m[1].rstrip(".,:;)]")
        if ref.endswith("/"):                     # a folder named as such
            continue
        base = ROOT if ref.startswith("docs/") else os.path.dirname(doc)
        for p in _braces(ref):
            out.append((ref, os.path.normpath(os.path.join(base, p))))
    return out


def test_readme_results_table_is_regenerated_from_the_committed_files(monkeypatch):
    monkeypatch.chdir(ROOT)
    args, body = read_block("README.md")
    ns = cli._parser().parse_args(["summary", *args])
    table = summary_table(expand_paths(ns.runs), parse_epochs(ns.at), ns.format,
                          group_by=ns.group_by)
    assert body == block_text(args, table, "README.md"), (
        "README.md's results table is stale: regenerate it with "
        f"crossbar-ep summary {' '.join(args)} --into README.md")


def test_docs_name_only_results_and_figures_that_exist():
    missing = []
    for doc in _docs():
        for ref, path in named_files(doc):
            hits = glob.glob(path) if any(c in path for c in "*?[") else \
                ([path] if os.path.exists(path) else [])
            if not hits:
                missing.append(f"{os.path.relpath(doc, ROOT)}: {ref}")
    assert not missing, "docs name files that do not exist:\n" + "\n".join(missing)


def test_every_result_file_is_listed_with_its_command():
    index = os.path.join(ROOT, "docs", "results", "README.md")
    with open(index, encoding="utf-8") as f:
        text = f.read()
    listed = set(re.findall(r"`([\w./-]+\.(?:csv|json|npz|png|md|txt|log|yaml))`", text))
    unlisted = []
    for p in sorted(glob.glob(os.path.join(ROOT, "docs", "results", "**", "*"),
                              recursive=True)):
        rel = os.path.relpath(p, os.path.join(ROOT, "docs", "results")).replace(os.sep, "/")
        if os.path.isdir(p) or rel == "README.md" or rel.endswith(".config.yaml"):
            continue
        if rel not in listed:
            unlisted.append(rel)
    assert not unlisted, ("docs/results/README.md does not list (with its command): "
                          + ", ".join(unlisted))


def test_the_reference_finder_catches_a_missing_file(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("See docs/results/nope_{0,1}.csv and ![f](figures/none.png), "
                   "not runs/a/figures/curves.png.\n")
    refs = named_files(str(doc))
    assert [r for r, _ in refs] == ["docs/results/nope_{0,1}.csv"] * 2 + ["figures/none.png"]
    assert refs[0][1].endswith("docs/results/nope_0.csv")
    assert refs[2][1] == str(tmp_path / "figures" / "none.png")
    assert not any(os.path.exists(p) for _, p in refs)


if __name__ == "__main__":        # pragma: no cover
    pytest.main([__file__])

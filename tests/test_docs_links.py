"""Relative links in the Markdown documentation point at files that exist (after a page or
study moves, no link dangles), and each docs/studies/ page is listed in its index."""

import os
import re

from conftest import REPO

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown_files() -> list:
    out = [os.path.join(REPO, f) for f in ("README.md", "CHANGELOG.md")]
    for top in ("docs", "benchmarks", "netlists", "device_models"):
        for dirpath, _, files in os.walk(os.path.join(REPO, top)):
            out += [os.path.join(dirpath, f) for f in files if f.endswith(".md")]
    return [p for p in out if os.path.isfile(p)]


def test_relative_markdown_links_resolve():
    bad = []
    for path in _markdown_files():
        text = open(path, encoding="utf-8").read()
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue                      # a URL or a link inside the page
            file_part = target.split("#", 1)[0]
            if not os.path.exists(os.path.join(os.path.dirname(path), file_part)):
                bad.append(f"{os.path.relpath(path, REPO)}: {target}")
    assert not bad, "links to missing files:\n" + "\n".join(bad)


def test_every_study_is_in_the_studies_index():
    folder = os.path.join(REPO, "docs", "studies")
    index = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    pages = [f for f in os.listdir(folder) if f.endswith(".md") and f != "README.md"]
    assert pages
    assert [p for p in pages if f"]({p})" not in index] == []

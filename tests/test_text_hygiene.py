"""Every tracked text file reads as a product, not a lab notebook: no narration of how the
project was built (work sessions, issue numbers, dates as history) and no absolute path of a
development machine.  History lives in CHANGELOG.md, by feature (dates allowed there only).

The patterns are checked against sentences they must flag and sentences they must leave
alone (citations with years, code identifiers, colour codes, timestamps in data files).
"""

import os
import re
import subprocess

import pytest
from conftest import REPO

MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|"
          "December")
# name -> (pattern, files it does not apply to)
RULES = {
    # "session" as a word of its own (not start_new_session, not a class name), and
    # "work period": the project's own working periods
    "session narration": (re.compile(r"(?<![\w.])sessions?(?![\w])|\bwork(?:ing)?[ -]periods?\b",
                                      re.I), ()),
    # a tracker reference: "issue 16", "issues 12-14", "issue-13", "issue #4", "PR 7"
    "issue number": (re.compile(r"\b(?:issues?|tickets?|PRs?|pull requests?)[ \t]*[-#]?[ \t]*"
                                r"\d+\b", re.I), ()),
    # a calendar date as history: ISO dates, "30 November 2026", "November 30, 2026",
    # "November 2026"; and diary words
    "date as history": (re.compile(
        r"\b(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?!\d)"
        rf"|\b\d{{1,2}}(?:st|nd|rd|th)?[ \t]+(?:{MONTHS})[ \t]+(?:19|20)\d\d\b"
        rf"|\b(?:{MONTHS})[ \t]+(?:\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+)?(?:19|20)\d\d\b"
        r"|(?<![\w.])(?:today|yesterday|this (?:morning|afternoon|evening))(?![\w(])",
        re.I), ("CHANGELOG.md",)),
    # an absolute path of a machine: a home, the root user's home or a work tree
    "machine path": (re.compile(r"(?<![\w.~-])/(?:work|root|home/[a-z_][\w.-]*|Users/\w+"
                                r"|mnt/\w+|scratch)/[\w.-]"), ()),
}
BINARY_EXT = (".png", ".jpg", ".gif", ".pdf", ".npz", ".npy", ".h5", ".hdf5", ".gz", ".whl",
              ".zip", ".pkl")


def violations(text: str, path: str = "x.md") -> list:
    """(rule, line number, line) for every line of ``text`` a rule flags (one per rule and
    line).  In data files (.csv, .json) a machine-written timestamp such as
    2026-11-30T01:34:34 is a value, not history, and passes."""
    data_file = path.endswith((".csv", ".json"))
    out = []
    for name, (pat, exempt) in RULES.items():
        if os.path.basename(path) in exempt:
            continue
        for no, line in enumerate(text.splitlines(), 1):
            for m in pat.finditer(line):
                if (data_file and name == "date as history"
                        and re.match(r"T\d\d:\d\d", line[m.end():])):
                    continue
                out.append((name, no, line.strip()[:160]))
                break
    return out


def _tracked_text_files() -> list:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                               check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = []
    for name in filter(None, names):
        path = os.path.join(REPO, name)
        if name.lower().endswith(BINARY_EXT) or not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            raw = fh.read()
        if b"\0" in raw[:8192]:
            continue
        out.append((name, raw.decode("utf-8", errors="replace")))
    return out


def test_no_narration_issue_numbers_dates_or_machine_paths_in_tracked_text():
    files = _tracked_text_files()
    assert len(files) > 100          # the scan sees the repository, not an empty list
    bad = [f"{name}:{no}: [{rule}] {line}" for name, text in files
           for rule, no, line in violations(text, name)]
    assert not bad, ("text that narrates how the project was built or names a machine's "
                     "paths (history goes to CHANGELOG.md by feature; use repository-relative "
                     "paths):\n" + "\n".join(bad))


FLAGGED = [
    ("session narration", "Measured in the tenth session on the device machine."),
    ("session narration", "Sessions 3-5 tuned the recipe."),
    ("session narration", "one work period later the ratio fell"),
    ("issue number", "the acceptance figure of issue 16"),
    ("issue number", "before the issue-13 energy corrections"),
    ("issue number", "Issue 12, items 6, 7 and 10: full disk"),
    ("issue number", "fixed in PR #42"),
    ("date as history", "measured 2026-11-30 on the quiet machine"),
    ("date as history", "since 30 November 2026 the file ships it"),
    ("date as history", "On December 6, 2026 the run collapsed"),
    ("date as history", "as of November 2026"),
    ("date as history", "the machine was slower today"),
    ("date as history", "run at 2026-11-30T01:34:34 by hand"),     # a timestamp in prose
    ("machine path", "run directory /work/runs/insitu_li"),
    ("machine path", "the teacher in /root/runs/bp"),
    ("machine path", "cd /home/alice/crossbar-ep"),
    ("machine path", "see (/Users/bob/data/mnist)"),
]
LEFT_ALONE = [
    "mixed precision (Nandakumar et al., Front. Neurosci. 2020), c-TTv2 (Rasch et al. 2023)",
    "Gokmen & Vlasov 2016; Liu & Chen, arXiv 2508.11659",
    "proc = subprocess.Popen(cmd, start_new_session=True)",
    "client = distributed.Client(); s = requests.Session()",
    'plt.plot(x, color="#1f77b4"); ax.set_facecolor("#333")',
    "the issue of read noise in 9-bit ADCs; issues with the wires",
    "PRNG draws; PRs are welcome",
    "data in ~/.cache/crossbar-ep and /usr/share/datasets; python -m pytest tests/",
    "runs/sweep-beta_i_x_read_noise/points/p0000; ../shared/data/mnist; docs/results/",
    "May the net settle: 20 epochs; a date field 'started_utc'",
    "today_ratio = ratio(); date.today()",
]


@pytest.mark.parametrize("rule,text", FLAGGED)
def test_the_patterns_flag_narration(rule, text):
    assert rule in {r for r, _, _ in violations(text)}, text


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_the_patterns_leave_ordinary_text_alone(text):
    assert violations(text) == [], text


def test_timestamps_pass_in_data_files_and_changelog_keeps_dates():
    row = "p0000,point,ok,0.01,vm,2026-11-30T01:34:34+00:00,70.4,runs/sweep/points/p0000"
    assert violations(row, "docs/figures/map.csv") == []
    assert violations("## 0.2.0 (2026-12-06)", "CHANGELOG.md") == []
    assert violations("## 0.2.0 (2026-12-06)", "README.md") != []
    assert violations("built on /work/main", "CHANGELOG.md") != []   # no machine paths there

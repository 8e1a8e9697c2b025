"""Every tracked text file reads as a product, not a lab notebook: no narration of how the
project was built (numbered stretches of work, tracker numbers, dates as history) and no
absolute path of a development machine.  History lives in CHANGELOG.md, by feature (dates
allowed there only).

The patterns are checked against sentences they must flag and sentences they must leave
alone (citations with years, code identifiers, colour codes, timestamps in data files).  The
flagged examples are assembled at run time from the placeholders in ``_fill``, so this file
holds none of the words it forbids.
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
    # the word for a sitting of work on the project as a word of its own (not inside an
    # identifier such as subprocess's start_new_..., not a class name), and "work" + "period"
    "work narration": (re.compile(r"(?<![\w.])ses" r"sions?(?![\w])"
                                  r"|\bwork(?:ing)?[ -]per" r"iods?\b", re.I), ()),
    # a tracker reference: the word for a tracker entry or pull request with its number
    "issue number": (re.compile(r"\b(?:issues?|tickets?|PRs?|pull requests?)[ \t]*[-#]?[ \t]*"
                                r"\d+\b", re.I), ()),
    # a calendar date as history: ISO dates, day month year, month day year, month year;
    # and diary words
    "date as history": (re.compile(
        r"\b(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?!\d)"
        rf"|\b\d{{1,2}}(?:st|nd|rd|th)?[ \t]+(?:{MONTHS})[ \t]+(?:19|20)\d\d\b"
        rf"|\b(?:{MONTHS})[ \t]+(?:\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+)?(?:19|20)\d\d\b"
        r"|(?<![\w.])(?:tod" r"ay|yester" r"day|this (?:morning|afternoon|evening))(?![\w(])",
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
    YYYY-MM-DDThh:mm:ss is a value, not history, and passes."""
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


def _fill(text: str) -> str:
    """Assemble a forbidden example from placeholders (so this file does not contain it)."""
    return (text.replace("{S}", "ses" "sion").replace("{I}", "iss" "ue")
            .replace("{Y}", "20" "26").replace("{R}", "/wo" "rk/").replace("{H}", "/ho" "me/"))


FLAGGED = [
    ("work narration", "Measured in the tenth {S} on the device machine."),
    ("work narration", "{S}s 3-5 tuned the recipe."),
    ("work narration", "one work per" "iod later the ratio fell"),
    ("issue number", "the acceptance figure of {I} 16"),
    ("issue number", "before the {I}-13 energy corrections"),
    ("issue number", "{I} 12, items 6, 7 and 10: full disk"),
    ("issue number", "fixed in P" "R #42"),
    ("date as history", "measured {Y}-11-30 on the quiet machine"),
    ("date as history", "since 30 November {Y} the file ships it"),
    ("date as history", "On December 6, {Y} the run collapsed"),
    ("date as history", "as of November {Y}"),
    ("date as history", "the machine was slower tod" "ay"),
    ("date as history", "run at {Y}-11-30T01:34:34 by hand"),     # a timestamp in prose
    ("machine path", "run directory {R}runs/insitu_li"),
    ("machine path", "the teacher in /ro" "ot/runs/bp"),
    ("machine path", "cd {H}alice/crossbar-ep"),
    ("machine path", "see (/Us" "ers/bob/data/mnist)"),
]
LEFT_ALONE = [
    "mixed precision (Nandakumar et al., Front. Neurosci. 2020), c-TTv2 (Rasch et al. 2023)",
    "Gokmen & Vlasov 2016; Liu & Chen, arXiv 2508.11659",
    "client = distributed.Client(); s = requests.get(url)",
    'plt.plot(x, color="#1f77b4"); ax.set_facecolor("#333")',
    "the issue of read noise in 9-bit ADCs; issues with the wires",
    "PRNG draws; PRs are welcome",
    "data in ~/.cache/crossbar-ep and /usr/share/datasets; python -m pytest tests/",
    "runs/sweep-beta_i_x_read_noise/points/p0000; ../shared/data/mnist; docs/results/",
    "May the net settle: 20 epochs; a date field 'started_utc'",
    "today_ratio = ratio(); date.today()",
    "proc = subprocess.Popen(cmd, start_new_" "ses" "sion=True); requests.Ses" "sion()",
]


@pytest.mark.parametrize("rule,text", FLAGGED)
def test_the_patterns_flag_narration(rule, text):
    text = _fill(text)
    assert rule in {r for r, _, _ in violations(text)}, text


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_the_patterns_leave_ordinary_text_alone(text):
    assert violations(text) == [], text


def test_timestamps_pass_in_data_files_and_changelog_keeps_dates():
    row = _fill("p0000,point,ok,0.01,vm,{Y}-11-30T01:34:34+00:00,70.4,runs/sweep/points/p0")
    assert violations(row, "docs/figures/map.csv") == []
    heading = _fill("## 0.2.0 ({Y}-12-06)")
    assert violations(heading, "CHANGELOG.md") == []
    assert violations(heading, "README.md") != []
    assert violations(_fill("built on {R}main"), "CHANGELOG.md") != []   # no machine paths

"""Tables generated into Markdown files between markers: ``crossbar-ep summary ... --into
README.md`` replaces the block

    <!-- results-table:start crossbar-ep summary ARGS -->
    ...generated text...
    <!-- results-table:end -->

and records in the start marker the arguments that made it, so a test (or a reader) can
regenerate the block and see whether the file still matches the committed results.
"""

from __future__ import annotations

import re
import shlex

from crossbar_ep.errors import CrossbarEPError

START, END = "<!-- results-table:start", "<!-- results-table:end -->"
_BLOCK = re.compile(re.escape(START) + r"(?P<args>[^\n]*?)-->\n(?P<body>.*?)" + re.escape(END),
                    re.S)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CrossbarEPError(f"--into {path}: cannot read ({exc})") from None


def read_block(path: str) -> tuple[list, str]:
    """(summary arguments recorded in the start marker, the block's text) of ``path``."""
    m = _BLOCK.search(_read(path))
    if m is None:
        raise CrossbarEPError(f"{path}: no block between '{START} ... -->' and '{END}' "
                              f"(add the two marker lines where the table belongs)")
    args = shlex.split(m["args"])
    if args[:2] != ["crossbar-ep", "summary"]:
        raise CrossbarEPError(f"{path}: the start marker must record a 'crossbar-ep summary' "
                              f"command, found {m['args'].strip()!r}")
    return args[2:], m["body"]


def block_text(args: list, table: str, into: str) -> str:
    """The generated block: a caption with the command, then the table."""
    cmd = " ".join(["crossbar-ep", "summary"] + [shlex.quote(a) for a in args])
    return (f"Generated from the committed per-epoch files by `{cmd} --into {into}` "
            f"(mean ± sd over the runs that differ only in their seed; best-epoch test "
            f"accuracy; docs/results/README.md gives each file's command).\n\n{table}\n")


def summary_args(args) -> list:
    """The arguments of a parsed ``crossbar-ep summary`` call that shape its table."""
    out = list(args.runs)
    if args.group_by:
        out += ["--group-by", args.group_by]
    out += ["--at", args.at]
    if args.format != "md":
        out += ["--format", args.format]
    return out


def write_block(path: str, args: list, table: str) -> None:
    """Replace the block of ``path`` with ``table`` made by ``crossbar-ep summary ARGS``."""
    text = _read(path)
    if _BLOCK.search(text) is None:
        read_block(path)                       # raises the clear error
    cmd = " ".join(["crossbar-ep", "summary"] + [shlex.quote(a) for a in args])
    new = f"{START} {cmd} -->\n{block_text(args, table, path)}{END}"
    text = _BLOCK.sub(lambda _m: new, text, count=1)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise CrossbarEPError(f"--into {path}: cannot write ({exc.strerror or exc})") from None

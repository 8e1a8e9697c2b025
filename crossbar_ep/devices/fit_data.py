"""Measured pulse trains for ``crossbar-ep device fit``: CSV files of conductance after each
pulse of alternating SET/RESET trains, read and checked row by row.

The CSV format (a header row, then one row per read; columns in any order, names case-blind):

==================  =========  ==============================================================
column              required   meaning
==================  =========  ==============================================================
``pulse``           yes        pulse index within the cycle: 0 is the read before the first
                               pulse (optional), then increasing; a gap (reads every k pulses)
                               means k pulses of the row's sign
``sign``            yes        +1 / SET / up (potentiation) or -1 / RESET / down; ignored on a
                               pulse-0 row
``conductance_S``   one of     conductance after the pulse, in siemens (or
``conductance_uS``  the two    ``conductance_uS`` in microsiemens)
``device``          no         device label (default: one device per file, named by the file)
``cycle``           no         cycle label (default 0); each (device, cycle) is one sequence
==================  =========  ==============================================================

Each (device, cycle) sequence splits into trains of consecutive same-sign pulses; a train
starts from the read before it (the sequence's first row when there is no pulse-0 read).
Every error names the file and the row (the line number, header = row 1).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from dataclasses import dataclass, field

import numpy as np

from crossbar_ep.errors import DataError

MAX_BYTES = 256 << 20          # a measurement file larger than this is refused unread
SIGNS = {"+1": 1, "1": 1, "set": 1, "up": 1, "+": 1, "-1": -1, "reset": -1, "down": -1,
         "-": -1}
UNITS = {"conductance_s": 1.0, "conductance_us": 1e-6}


@dataclass
class Train:
    """One train of same-sign pulses of one device: the conductance before it (S) and the
    reads after pulses ``offsets`` (1-based pulse counts from the start), shapes (m,)."""

    device: int
    cycle: str
    sign: int
    g0: float
    offsets: np.ndarray
    g: np.ndarray
    file: str
    row: int                    # row of the train's first read (for messages)

    @property
    def n_pulses(self) -> int:
        return int(self.offsets[-1])


@dataclass
class PulseData:
    """Trains of every device, the device labels, and each file's SHA-256."""

    devices: list
    trains: list
    files: list = field(default_factory=list)    # [(path, sha256 hex), ...]
    sequences: list = field(default_factory=list)   # [(device, cycle, pulses, signs, g)]

    @property
    def n_reads(self) -> int:
        return int(sum(t.offsets.size for t in self.trains))

    def g_all(self) -> np.ndarray:
        """Every conductance read (S), starts included."""
        return np.concatenate([np.r_[t.g0, t.g] for t in self.trains])

    def device_trains(self, d: int) -> list:
        return [t for t in self.trains if t.device == d]

    def cycles(self) -> int:
        return len({(t.device, t.cycle) for t in self.trains})


def _fail(path: str, row: int | None, msg: str) -> DataError:
    where = f"{path}: row {row}: " if row is not None else f"{path}: "
    return DataError(where + msg)


def _read_text(path: str) -> tuple:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such data file (give CSV files of conductance per pulse)")
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise DataError(f"{path}: {size} bytes is larger than the {MAX_BYTES >> 20} MiB limit "
                        f"of a measurement file; split it by device")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") \
            from None
    return text, hashlib.sha256(raw).hexdigest()


def _columns(path: str, header: list) -> dict:
    names = [h.strip().lower() for h in header]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise _fail(path, 1, f"the column {dup!r} appears twice")
    col = {n: i for i, n in enumerate(names)}
    g = [n for n in UNITS if n in col]
    missing = [n for n in ("pulse", "sign") if n not in col] + ([] if g else ["conductance_S"])
    if missing:
        raise _fail(path, 1, f"missing column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} (found: {', '.join(header) or 'none'}); the header "
                    f"needs pulse, sign, conductance_S (or conductance_uS), optionally device "
                    f"and cycle")
    if len(g) > 1:
        raise _fail(path, 1, "give conductance_S or conductance_uS, not both")
    return {"pulse": col["pulse"], "sign": col["sign"], "g": col[g[0]], "scale": UNITS[g[0]],
            "device": col.get("device"), "cycle": col.get("cycle")}


def _parse_rows(path: str, text: str) -> dict:
    """(device label, cycle label) -> list of (row, pulse, sign, g in S), in file order."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise _fail(path, None, "empty file; the first row is the header (pulse, sign, "
                    "conductance_S, ...)") from None
    except csv.Error as exc:
        raise _fail(path, 1, f"not valid CSV ({exc})") from None
    c = _columns(path, header)
    width = len(header)
    stem = os.path.splitext(os.path.basename(path))[0]
    seqs: dict = {}
    try:
        for cells in reader:
            row = reader.line_num
            if not cells or all(not x.strip() for x in cells):
                continue
            if len(cells) != width:
                raise _fail(path, row, f"{len(cells)} values for {width} columns")
            try:
                pulse = float(cells[c["pulse"]])
            except ValueError:
                raise _fail(path, row, f"pulse: {cells[c['pulse']]!r} is not a number") \
                    from None
            if not math.isfinite(pulse) or pulse != int(pulse) or pulse < 0:
                raise _fail(path, row, f"pulse: {cells[c['pulse']]!r} is not a whole number "
                            f">= 0")
            sraw = cells[c["sign"]].strip().lower()
            sign = SIGNS.get(sraw.replace(".0", ""))
            if sign is None and not (pulse == 0 and sraw in ("", "0", "0.0")):
                raise _fail(path, row, f"sign: {cells[c['sign']]!r}; use +1 (SET, up) or -1 "
                            f"(RESET, down)")
            try:
                g = float(cells[c["g"]]) * c["scale"]
            except ValueError:
                raise _fail(path, row, f"{header[c['g']].strip()}: {cells[c['g']]!r} is not a "
                            f"number") from None
            if not math.isfinite(g):
                raise _fail(path, row, f"{header[c['g']].strip()}: {cells[c['g']]!r} is not a "
                            f"finite number (NaN or inf); remove the row or fill in the read")
            if g < 0 or g > 1.0:
                raise _fail(path, row, f"{header[c['g']].strip()}: {g:g} S is outside 0 to 1 S "
                            f"(a conductance in siemens; microsiemens go in conductance_uS)")
            dev = cells[c["device"]].strip() if c["device"] is not None else stem
            cyc = cells[c["cycle"]].strip() if c["cycle"] is not None else "0"
            seqs.setdefault((dev, cyc), []).append((row, int(pulse), sign or 0, g))
    except csv.Error as exc:
        raise _fail(path, reader.line_num, f"not valid CSV ({exc})") from None
    if not seqs:
        raise _fail(path, None, "no data rows under the header")
    return seqs


def _trains(path: str, dev: int, label: tuple, rows: list) -> tuple:
    """The trains of one (device, cycle) sequence, and its (pulses, signs, g) arrays."""
    if len(rows) < 2:
        raise _fail(path, rows[0][0], f"device {label[0]!r}, cycle {label[1]!r} has a single "
                    f"read: a train needs the conductance before and after its pulses")
    for (r0, p0, _, _), (r1, p1, _, _) in zip(rows, rows[1:]):
        if p1 <= p0:
            raise _fail(path, r1, f"pulse index {p1} after {p0} (row {r0}): the pulse index "
                        f"must increase within device {label[0]!r}, cycle {label[1]!r}")
    for r, p, s, _ in rows[1:]:
        if s == 0:
            raise _fail(path, r, f"sign: missing on pulse {p}; use +1 or -1")
    trains = []
    start = rows[0]
    i = 1
    while i < len(rows):
        sign = rows[i][2]
        j = i
        while j + 1 < len(rows) and rows[j + 1][2] == sign:
            j += 1
        if i > 1 and rows[i][1] - rows[i - 1][1] > 1:
            raise _fail(path, rows[i][0], f"a gap in the pulse index ({rows[i - 1][1]} to "
                        f"{rows[i][1]}) where the sign changes: the signs of the pulses "
                        f"between are unknown; read at least the first pulse of each train")
        seg = rows[i:j + 1]
        offsets = np.array([p - start[1] for _, p, _, _ in seg], np.int64)
        trains.append(Train(dev, label[1], sign, start[3], offsets,
                            np.array([g for *_, g in seg]), path, seg[0][0]))
        start = rows[j]
        i = j + 1
    arr = np.array([(p, s, g) for _, p, s, g in rows])
    return trains, (arr[:, 0].astype(int), arr[:, 1].astype(int), arr[:, 2])


def read_pulse_data(paths) -> PulseData:
    """Read and check one or several CSV files (format in the module docstring)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise DataError("device fit: give at least one CSV file of measured pulse trains")
    devices: list = []
    trains: list = []
    files: list = []
    seen: dict = {}
    sequences: list = []
    for path in map(str, paths):
        text, sha = _read_text(path)
        files.append((path, sha))
        for label, rows in _parse_rows(path, text).items():
            if label in seen:
                raise _fail(path, rows[0][0], f"device {label[0]!r}, cycle {label[1]!r} also "
                            f"appears in {seen[label]}; give each cycle once (or label the "
                            f"devices apart)")
            seen[label] = path
            if label[0] not in devices:
                devices.append(label[0])
            d = devices.index(label[0])
            tr, seq = _trains(path, d, label, rows)
            trains += tr
            sequences.append((d, label[1], *seq))
    return PulseData(devices, trains, files, sequences)


def write_pulse_csv(path: str, rows) -> None:
    """Write rows of (device, cycle, pulse, sign, conductance_S) in the fit's CSV format."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["device", "cycle", "pulse", "sign", "conductance_S"])
        for dev, cyc, p, s, g in rows:
            w.writerow([dev, cyc, int(p), int(s), repr(float(g))])

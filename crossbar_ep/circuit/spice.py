"""SPICE netlists of crossbar tiles and an ngspice runner (the independent reference).

Conventions (also in ``netlists/README.md``), for a tile of m rows and n physical columns:

- row node at crossing (i, j): ``r<i>_<j>`` (``r<i>`` when the row wire is ideal);
  column node: ``c<i>_<j>`` (``c<j>`` when the column wire is ideal);
- device: ``RG<i>_<j> r.. c.. <1/G>`` (ohm); row wire ``RR<i>_<j>`` between crossings j and
  j + 1; column wire ``RC<i>_<j>`` between crossings i and i + 1;
- drivers: ``VIN<k> drv<k> 0 DC <V>`` behind ``RDRV<k>`` (or straight onto the line end when
  ``r_driver`` is 0); forward reads drive row starts (crossing (i, 0)), transposed reads drive
  column feet (crossing (m - 1, j));
- sense amplifiers: a 0 V source ``VSENSE<k> sen<k> 0 DC 0`` as ammeter behind ``RSEN<k>``
  (or straight on the line end); ``i(vsense<k>)`` is the current into the amplifier (A);
- ``.op`` and a ``.control`` block that runs it, prints every ``i(vsense<k>)`` with 15
  digits and quits (so batch mode does not solve the deck's ``.op`` a second time).

Every string a writer interpolates (titles, card names, citations, run paths, matrix names)
passes through :func:`netlist_text`, and :func:`finish_netlist` checks the assembled deck, so a
hostile device card or run path can never add a line (a ``.control`` block with ``shell``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from crossbar_ep.circuit.nodal import Wires
from crossbar_ep.errors import CrossbarEPError


class SpiceError(CrossbarEPError):
    """ngspice is missing, failed, or printed no currents."""


_DIRECTIVES = (".op", ".control", ".endc", ".end")


def netlist_text(s, ident: bool = False) -> str:
    """``s`` made safe to interpolate into a netlist line: printable ASCII only; newlines, CRs,
    other control characters and non-ASCII become visible backslash escapes (``\\n``), so
    the text can never end its line or start a new one.  ``ident``: for node and element
    names, every character but letters, digits and ``_`` becomes ``_``."""
    s = str(s)
    if ident:
        return re.sub(r"[^A-Za-z0-9_]", "_", s) or "_"
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii")
                   for c in s)


def finish_netlist(lines: list) -> str:
    """Join a writer's lines into the deck, checking that each is printable ASCII and that the
    only dot-commands are the writers' own (one ``.control`` block at the end)."""
    for ln in lines:
        if netlist_text(ln) != ln:
            raise ValueError(f"netlist line with a control or non-ASCII character: {ln!r}")
        if ln.startswith(".") and ln not in _DIRECTIVES and not ln.startswith(".options "):
            raise ValueError(f"unexpected netlist directive: {ln!r}")
    if sum(ln.startswith(".control") for ln in lines) > 1:
        raise ValueError("more than one .control block in a netlist")
    return "\n".join(lines)


def check_netlist_path(path: str) -> None:
    """Fail early, with a clear message, when ``path`` cannot take a netlist file."""
    if os.path.isdir(path):
        raise CrossbarEPError(f"-o {path}: is a directory; give a file name such as "
                              f"{os.path.join(path, 'tile.cir')}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist; create it first"
        raise CrossbarEPError(f"-o {path}: {folder} {what}")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise CrossbarEPError(f"-o {path}: not writable; choose a file in a writable folder")


def write_netlist(path: str, text: str) -> None:
    """Write a netlist file; an unwritable ``path`` is a :class:`CrossbarEPError`."""
    check_netlist_path(path)
    try:
        with open(path, "w", encoding="ascii") as fh:
            fh.write(text)
    except OSError as exc:
        raise CrossbarEPError(f"-o {path}: cannot write the netlist ({exc.strerror or exc}); "
                              f"choose a writable file") from None


def _row(i, j, w):
    return f"r{i}_{j}" if w.r_row > 0 else f"r{i}"


def _col(i, j, w):
    return f"c{i}_{j}" if w.r_col > 0 else f"c{j}"


def tile_netlist(G: np.ndarray, wires: Wires, V: np.ndarray, transposed: bool = False,
                 title: str = "crossbar-ep tile", comments: list | None = None,
                 iv=None) -> str:
    """Netlist text of one tile read: conductances G (m, n) in S, drive voltages V (V).
    ``iv``: a nonlinear :class:`crossbar_ep.circuit.iv.IVLaw` writes each device as a behavioural
    current source ``BG<i>_<j> r.. c.. I=G*f(V(r..,c..))`` instead of a resistor."""
    G = np.asarray(G, float)
    m, n = G.shape
    V = np.asarray(V, float).ravel()
    n_src = n if transposed else m
    if V.size != n_src:
        raise ValueError(f"V has {V.size} values, the {'columns' if transposed else 'rows'} "
                         f"need {n_src}")
    w = wires
    out = [f"* {netlist_text(title)}"]
    for c in comments or []:
        out.append(f"* {netlist_text(c)}")
    out.append(f"* {m} rows x {n} columns, {'transposed' if transposed else 'forward'} read; "
               f"r_row {w.r_row:g} ohm, r_col {w.r_col:g} ohm, r_driver {w.r_driver:g} ohm, "
               f"r_sense {w.r_sense:g} ohm")
    for i in range(m):
        for j in range(n):
            g = G[i, j]
            if g > 0 and iv is not None and not iv.linear:
                a, b = _row(i, j, w), _col(i, j, w)
                out.append(f"BG{i}_{j} {a} {b} I={iv.spice_current(g, a, b)}")
            elif g > 0:
                out.append(f"RG{i}_{j} {_row(i, j, w)} {_col(i, j, w)} {1.0 / g:.17g}")
    if w.r_row > 0:
        for i in range(m):
            for j in range(n - 1):
                out.append(f"RR{i}_{j} {_row(i, j, w)} {_row(i, j + 1, w)} {w.r_row:.17g}")
    if w.r_col > 0:
        for i in range(m - 1):
            for j in range(n):
                out.append(f"RC{i}_{j} {_col(i, j, w)} {_col(i + 1, j, w)} {w.r_col:.17g}")
    if transposed:
        drive_ends = [_col(m - 1, j, w) for j in range(n)]
        sense_ends = [_row(i, 0, w) for i in range(m)]
    else:
        drive_ends = [_row(i, 0, w) for i in range(m)]
        sense_ends = [_col(m - 1, j, w) for j in range(n)]
    for k, node in enumerate(drive_ends):
        if w.r_driver > 0:
            out.append(f"VIN{k} drv{k} 0 DC {V[k]:.17g}")
            out.append(f"RDRV{k} drv{k} {node} {w.r_driver:.17g}")
        else:
            out.append(f"VIN{k} {node} 0 DC {V[k]:.17g}")
    for k, node in enumerate(sense_ends):
        if w.r_sense > 0:
            out.append(f"RSEN{k} {node} sen{k} {w.r_sense:.17g}")
            out.append(f"VSENSE{k} sen{k} 0 DC 0")
        else:
            out.append(f"VSENSE{k} {node} 0 DC 0")
    out += [".options gmin=1e-20 reltol=1e-12 abstol=1e-20 vntol=1e-15",
            ".op", ".control", "set numdgt=15", "op"]
    names = [f"i(vsense{k})" for k in range(len(sense_ends))]
    for s in range(0, len(names), 8):
        out.append("print " + " ".join(names[s:s + 8]))
    # quit: batch mode would otherwise run the deck's .op a second time after the block
    out += ["quit", ".endc", ".end", ""]
    return finish_netlist(out)


def ngspice_available() -> bool:
    return shutil.which("ngspice") is not None


def run_ngspice(netlist: str, timeout: float = 600.0) -> dict:
    """Run a netlist with ``ngspice -b`` and return {name: value} of the printed values."""
    exe = shutil.which("ngspice")
    if exe is None:
        raise SpiceError("ngspice is not installed: apt-get install -y ngspice")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tile.cir")
        with open(path, "w", encoding="ascii") as fh:
            fh.write(netlist)
        try:
            res = subprocess.run([exe, "-b", path], capture_output=True, text=True,
                                 timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise SpiceError(f"ngspice did not finish within {timeout:g} s") from None
    values = {}
    for name, val in re.findall(r"^\s*(\S+)\s*=\s*([-+0-9.eE]+)\s*$", res.stdout, re.M):
        values[name.lower()] = float(val)
    if res.returncode != 0 or not values:
        raise SpiceError(f"ngspice failed (exit {res.returncode}): "
                         f"{(res.stderr or res.stdout)[-1500:]}")
    return values


def sensed_currents(values: dict, n_sense: int) -> np.ndarray:
    """The ``i(vsense<k>)`` values of :func:`run_ngspice` as an array (A)."""
    try:
        return np.array([values[f"i(vsense{k})"] for k in range(n_sense)])
    except KeyError as exc:
        raise SpiceError(f"ngspice printed no {exc.args[0]}") from None

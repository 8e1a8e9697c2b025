"""IR drop in the reads of a trained crossbar: per-tile effective matrices from nodal analysis.

Each logical tile (``tile_rows`` inputs x ``tile_cols`` outputs) is one physical array of
``rows x n_phys`` devices: for differential pairs, physical column ``2j`` holds output j's G+
and ``2j + 1`` its G- (neighbours, as in most layouts); for the reference mapping, columns
``0 .. tile_cols - 1`` hold the devices and the last column the reference devices at mid
conductance.  A forward read senses every physical column and forms output j as
``C @ I`` with the signed combination matrix ``C`` (tile_cols, n_phys) (+1 on the device
column, -1 on its partner or the reference); a transposed read drives the physical columns
with ``C^T V`` (+V on G+, -V on G-) and senses the rows.  For the reference mapping the
transposed read drives the device columns with V and holds the reference column at 0 V (its
driver idle); the periphery subtracts the reference current ``g_ref sum_j V_j`` of every row
digitally (:func:`transposed_drive`).

:class:`TileIRDrop` solves the tile's circuit exactly (:class:`~crossbar_ep.circuit.nodal.TileCircuit`)
and turns the sensed-current maps into effective weights in output units.  With equal driver
and sense resistance the transposed map is the transpose of the forward one (reciprocity)
and only one circuit is solved for the reads; the read energy's transposed source
admittance is then solved lazily, once per exact solve, when an energy meter asks for it
(:meth:`TileIRDrop.admittances`).  An exact solve costs seconds for a 256 x 512 physical array,
so between exact solves (every ``refresh_every`` writes) the maps follow the conductance
changes to first order: ``M = M_ref + A o (G - G_ref)`` with each device's attenuation
``A = M_ref / G_ref`` frozen at the last exact solve (the change of the IR-drop pattern itself
is neglected until the next solve; docs/circuit.md gives the measured error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar_ep.circuit.nodal import Wires, tile_maps, transposed_admittance
from crossbar_ep.schema import MAX_OHM, MAX_STEPS, key, p_float, p_int


@dataclass(frozen=True)
class WireSettings:
    """Wire resistances of every tile (ohm) and the exact-solve cadence (writes); also the
    ``crossbar.wires`` config section.  :attr:`wires` is the circuit the nodal solvers take."""

    r_wire_row_ohm: float = key(0.0, "Row (word-line) wire resistance between neighbouring "
                                "crossings; 0 for ideal wires.", p_float(lo=0.0, hi=MAX_OHM),
                                "ohm")
    r_wire_col_ohm: float = key(0.0, "Column (bit-line) wire resistance between neighbouring "
                                "crossings; 0 for ideal wires.", p_float(lo=0.0, hi=MAX_OHM),
                                "ohm")
    r_driver_ohm: float = key(0.0, "Output resistance of each line driver (DAC buffer), per "
                              "driven line of every tile.", p_float(lo=0.0, hi=MAX_OHM), "ohm")
    r_sense_ohm: float = key(0.0, "Input resistance of each sense amplifier (virtual ground), "
                             "per sensed line of every tile.", p_float(lo=0.0, hi=MAX_OHM),
                             "ohm")
    refresh_every: int = key(1, "Exact nodal solve of a tile every N writes (1: after every "
                             "update); in between, the IR-drop maps follow the conductance "
                             "changes to first order (docs/circuit.md).",
                             p_int(lo=1, hi=MAX_STEPS), "writes")
    energy_refresh_every: int = key(4, "With r_driver_ohm == r_sense_ohm the reads need no "
                                    "transposed circuit; the read energy's transposed source "
                                    "admittance is then solved (lazily, when an energy meter "
                                    "asks) at every Nth exact solve and followed to first order "
                                    "in between (docs/circuit.md).", p_int(lo=1, hi=MAX_STEPS),
                                    "exact solves")

    @classmethod
    def of(cls, wires: Wires, refresh_every: int = 1) -> "WireSettings":
        """Settings for the resistances of a :class:`~crossbar_ep.circuit.nodal.Wires`."""
        return cls(wires.r_row, wires.r_col, wires.r_driver, wires.r_sense, refresh_every, 1)

    @property
    def wires(self) -> Wires:
        return Wires(self.r_wire_row_ohm, self.r_wire_col_ohm, self.r_driver_ohm,
                     self.r_sense_ohm)

    @property
    def ideal(self) -> bool:
        return (self.r_wire_row_ohm == self.r_wire_col_ohm == self.r_driver_ohm
                == self.r_sense_ohm == 0.0)


def combination(n_out: int, signed: str) -> np.ndarray:
    """C (n_out, n_phys): output j = C @ (sensed physical column currents)."""
    if signed == "differential":
        C = np.zeros((n_out, 2 * n_out))
        C[np.arange(n_out), 2 * np.arange(n_out)] = 1.0
        C[np.arange(n_out), 2 * np.arange(n_out) + 1] = -1.0
    else:
        C = np.zeros((n_out, n_out + 1))
        C[np.arange(n_out), np.arange(n_out)] = 1.0
        C[:, n_out] = -1.0
    return C


def transposed_drive(V: np.ndarray, signed: str) -> np.ndarray:
    """Physical column voltages of a transposed read for output-drive voltages V
    (n_out,) or (n_out, k): ``+V, -V`` on each G+, G- pair, or V on the device columns and 0 V
    on the (undriven) reference column."""
    V = np.asarray(V, float)
    if signed == "differential":
        out = np.empty((2 * V.shape[0],) + V.shape[1:])
        out[0::2], out[1::2] = V, -V
        return out
    return np.concatenate([V, np.zeros((1,) + V.shape[1:])])


def physical_tile(g_pos: np.ndarray, g_neg: np.ndarray | None, g_ref: float) -> np.ndarray:
    """Physical conductances (rows, n_phys) in S of one tile from the (n_out, n_in) blocks of
    the logical matrix: G+ and G- interleaved, or devices then one reference column."""
    n_out, n_in = g_pos.shape
    if g_neg is not None:
        G = np.empty((n_in, 2 * n_out))
        G[:, 0::2] = g_pos.T
        G[:, 1::2] = g_neg.T
    else:
        G = np.empty((n_in, n_out + 1))
        G[:, :n_out] = g_pos.T
        G[:, n_out] = g_ref
    return G


class TileIRDrop:
    """Effective forward and transposed weights of one tile with IR drop.

    ``units``: output units per (ampere per volt), i.e. weight per siemens of differential
    conductance (``scale / span`` for pairs, ``2 scale / span`` for the reference mapping).
    """

    def __init__(self, settings: WireSettings, signed: str, units: float):
        self.s, self.signed, self.units = settings, signed, units
        self.G_ref = None
        self.since_exact = 0
        self.exact_solves = 0
        self.Yt_ref = self.Yt_G = None
        self.since_yt = 0
        self.lazy_solves = 0          # transposed admittances solved for the energy only

    def _exact(self, G: np.ndarray) -> None:
        w = self.s.wires
        Mf, Yf = tile_maps(G, w, transposed=False)                        # (n_phys, rows)
        if w.r_driver == w.r_sense:
            Mt, Yt = Mf.T, None                                           # reciprocity
        else:
            Mt, Yt = tile_maps(G, w, transposed=True)                     # (rows, n_phys)
        self.Yf_ref = Yf
        if Yt is not None:
            self.Yt_ref, self.Yt_G = Yt, G.copy()
        elif (self.Yt_ref is not None and self.Yt_G.shape == G.shape
              and self.since_yt + 1 < self.s.energy_refresh_every):
            self.since_yt += 1                  # keep the transposed admittance (first order)
        else:
            self.Yt_ref = None                  # solved lazily for the energy, at this G
            self.Yt_G, self.since_yt = G.copy(), 0
        with np.errstate(divide="ignore", invalid="ignore"):
            att_f = np.where(G > 0, Mf.T / G, 1.0)
            att_t = np.where(G > 0, Mt / G, 1.0)
        self.G_ref, self.Mf_ref, self.Mt_ref = G.copy(), Mf, Mt
        self.att_f, self.att_t = att_f, att_t
        self.since_exact = 0
        self.exact_solves += 1

    def maps(self, G: np.ndarray, force_exact: bool = False) -> tuple:
        """Sensed-current maps (Mf (n_phys, rows), Mt (rows, n_phys)) in A/V for the physical
        conductances G; exact every ``refresh_every`` calls, first order in between.  A tile
        whose conductances did not change since its last exact solve keeps its maps."""
        if self.G_ref is not None and self.G_ref.shape == G.shape and \
                np.array_equal(G, self.G_ref):
            return self.Mf_ref, self.Mt_ref
        if (force_exact or self.G_ref is None or self.G_ref.shape != G.shape
                or self.since_exact + 1 >= self.s.refresh_every):
            self._exact(G)
            return self.Mf_ref, self.Mt_ref
        self.since_exact += 1
        dG = G - self.G_ref
        Mf = self.Mf_ref + (self.att_f * dG).T
        if self.reciprocal:            # Mt_ref = Mf_ref^T and att_t = att_f: Mt = Mf^T
            return Mf, Mf.T
        return Mf, self.Mt_ref + self.att_t * dG

    @property
    def reciprocal(self) -> bool:
        return self.s.wires.r_driver == self.s.wires.r_sense

    def admittances(self, G: np.ndarray) -> tuple:
        """Source admittances for the read energy: (Yf (rows, rows), Yt (n_phys, n_phys))
        in S, from the last exact solve plus the diagonal change ``sum_j dG`` since (first
        order).  When the reciprocity shortcut skipped the transposed circuit for the reads,
        its admittance is solved here, at every ``energy_refresh_every``-th exact solve and at
        that solve's conductances, and followed to first order in between (reads without an
        energy meter never pay for it)."""
        if self.Yt_ref is None:
            w = self.s.wires
            if w.r_row > 0 and w.r_col > 0 and w.r_driver > 0:
                self.Yt_ref = transposed_admittance(self.Yt_G, w)
            else:
                self.Yt_ref = tile_maps(self.Yt_G, w, transposed=True)[1]
            self.lazy_solves += 1
        dG = G - self.G_ref
        Yf = self.Yf_ref + np.diag(dG.sum(axis=1))
        Yt = self.Yt_ref + np.diag((G - self.Yt_G).sum(axis=0))
        return Yf, Yt

    def weights(self, G: np.ndarray, force_exact: bool = False) -> tuple:
        """(fwd (n_in, n_out), bwd (n_out, n_in)) operands in output units per state unit:
        forward read ``x @ fwd``, transposed read ``y @ bwd``."""
        Mf, Mt = self.maps(G, force_exact)
        if self.signed == "differential":     # C @ Mf and Mt @ C^T without the dense C
            fwd = (Mf[0::2] - Mf[1::2]).T
            bwd = fwd.T if self.reciprocal else (Mt[:, 0::2] - Mt[:, 1::2]).T
        else:     # transposed: reference column at 0 V, g_ref sum V subtracted digitally
            fwd = (Mf[:-1] - Mf[-1]).T
            bwd = (Mt[:, :-1] - self.G_ref[:, -1:]).T
        return fwd * self.units, bwd * self.units

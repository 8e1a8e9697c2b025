"""Device current-voltage laws for the reads: ``I = G f(V)`` with f'(0) = 1, so G stays the
small-signal conductance the mapping programs.

- ``linear``: f(V) = V;
- ``sinh``: f(V) = v0 sinh(V / v0) (ionic / tunnelling conduction; v0 in volts);
- ``polynomial``: f(V) = V + a3 V^3 + a5 V^5 + ... (odd, so a device conducts the same both
  ways; ``coeffs`` = [a3, a5, ...] in V^-2, V^-4, ...).

Every law is odd, so a differential pair read with +V on G+ and -V on G- gives
``(G+ - G-) f(V)`` in both read directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.schema import key, p_choice, p_float, p_list


@dataclass(frozen=True)
class IVLaw:
    """The I-V law of every device read; also the ``crossbar.iv`` config section."""

    law: str = key("linear", "Device I-V law of the reads, I = G f(V) with f'(0) = 1: linear, "
                   "sinh (f = v0 sinh(V / v0)) or polynomial (f = V + a3 V^3 + a5 V^5 ...).",
                   p_choice("linear", "sinh", "polynomial"))
    v0_V: float = key(0.25, "sinh law: voltage scale v0.", p_float(lo=1.0e-6, hi=1.0e3), "V")
    coeffs: tuple = key((), "polynomial law: [a3, a5, ...], the coefficients of V^3, V^5, ...",
                        p_list(p_float()), "V^-2, V^-4, ...")

    def __post_init__(self):
        if self.law not in ("linear", "sinh", "polynomial"):
            raise ValueError(f"I-V law {self.law!r}: use linear, sinh or polynomial")
        if self.law == "sinh" and not self.v0_V > 0:
            raise ValueError(f"sinh I-V law needs v0_V > 0, got {self.v0_V}")

    @property
    def linear(self) -> bool:
        return self.law == "linear" or (self.law == "polynomial" and not any(self.coeffs))

    def check_reads(self, signed: str, ideal_wires: bool) -> None:
        """Raise :class:`~crossbar_ep.errors.CrossbarEPError` for the crossbar reads this law
        cannot be simulated in exactly (the config's ``crossbar.iv.law`` rules): a nonlinear
        law with wire resistance (the settling loop reads through linear nodal maps) or with
        the reference mapping."""
        if self.linear:
            return
        if not ideal_wires:
            raise CrossbarEPError(
                f"CrossbarMatrix: the {self.law} I-V law together with wire resistance would "
                f"be read through linear nodal maps with f applied to the drive (off by tens of "
                f"percent against ngspice); pass wires=WireSettings() (ideal wires) with the nonlinear law, or "
                f"iv=IVLaw('linear') with the wires (TileCircuit.nonlinear_sensed_currents "
                f"solves single reads with both exactly)")
        if signed != "differential":
            raise CrossbarEPError(
                f"CrossbarMatrix: the {self.law} I-V law needs signed='differential' (with "
                f"signed={signed!r} the reference current the periphery subtracts would not "
                f"follow the device law)")

    def f(self, V):
        """Current per siemens (A/S = V) at device voltage V (V)."""
        if self.law == "sinh":
            return self.v0_V * np.sinh(np.asarray(V) / self.v0_V)
        if self.law == "polynomial":
            V = np.asarray(V)
            out = V.copy() if isinstance(V, np.ndarray) else V
            for k, a in enumerate(self.coeffs):
                out = out + a * V ** (2 * k + 3)
            return out
        return V

    def df(self, V):
        """Differential conductance per siemens, f'(V) (dimensionless)."""
        V = np.asarray(V, float)
        if self.law == "sinh":
            return np.cosh(V / self.v0_V)
        if self.law == "polynomial":
            out = np.ones_like(V)
            for k, a in enumerate(self.coeffs):
                out = out + a * (2 * k + 3) * V ** (2 * k + 2)
            return out
        return np.ones_like(V)

    def spice_current(self, g: float, node_a: str, node_b: str) -> str:
        """Behavioural-source expression of the device current from node_a to node_b."""
        v = f"V({node_a},{node_b})"
        if self.law == "sinh":
            return f"{g:.17g}*{self.v0_V:.17g}*sinh({v}/{self.v0_V:.17g})"
        if self.law == "linear":
            return f"{g:.17g}*{v}"
        terms = [v] + [f"{a:.17g}*{v}" + f"*{v}" * (2 * k + 2)
                       for k, a in enumerate(self.coeffs)]
        return f"{g:.17g}*(" + "+".join(terms) + ")"

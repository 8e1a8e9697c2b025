"""Signed-weight mappings: how a real weight matrix W (n_out, n_in) lives in positive
conductances.

Weights are stored as normalised conductances ``u = (G - G_min) / (G_max - G_min)`` in [0, 1]
with a per-matrix scale ``S`` (weight units per unit of u):

- :class:`DifferentialPair`: two devices per weight, ``W = S (u+ - u-)``, programmed
  symmetrically ``u+- = 1/2 +- W / (2 S)``; physically G+ and G- sit in neighbouring columns
  and the sense amplifier takes I+ - I-;
- :class:`ReferenceColumn`: one device per weight and a shared column at mid conductance,
  ``W = S (2 u - 1)``; the forward read's sense amplifier takes I - I_ref; the transposed read
  drives the device columns only (reference column at 0 V) and the periphery subtracts the
  reference current ``g_ref sum_j V_j`` of each row digitally.

A mapping owns the device arrays and answers everything that depends on the mapping: the
weights the conductances encode, exact and pulsed changes, the physical tile layout for nodal
solves, line sums for the read energy and the conversion from conductance to weight units.
Shapes of conductance arrays are (n_out, n_in) in S.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.crossbar.array_energy import abs_count_dot
from crossbar_ep.crossbar.operand_kernels import pair_weights, reference_weights
from crossbar_ep.devices import DeviceArray
from crossbar_ep.devices.kernel import pulse_counts_flat


class SignedMapping:
    """Shared part of the mappings; ``arrays`` lists (side, DeviceArray) pairs."""

    name = ""
    arrays: tuple = ()

    def __init__(self, card, shape: tuple, rng: np.random.Generator, scale: float):
        self.card, self.scale = card, float(scale)
        self.span_S = card.g_max_S - card.g_min_S
        self.g_ref_S = 0.5 * (card.g_min_S + card.g_max_S)

    def _u_to_w(self, u):
        return self.card.w_min + u * (self.card.w_max - self.card.w_min)

    def _g_to_u(self, g):
        return (g - self.card.g_min_S) / self.span_S

    def device_change(self, dW: np.ndarray) -> np.ndarray:
        """State change per device (w units) for a weight change dW: du = dW / (2 S) in both
        mappings (a differential pair splits it, +du on G+ and -du on G-)."""
        return np.asarray(dW, float) / (2 * self.scale) * (self.card.w_max - self.card.w_min)

    def pulse_factor(self) -> float:
        """Pulses per unit of weight change for one device of the mapping (nominal step)."""
        return (self.card.w_max - self.card.w_min) / (2 * self.scale) / self.card.mean_step

    def conductances(self, drifted: bool = True) -> tuple:
        """(G+ or G, G- or None), each (n_out, n_in) in S (``drifted=False``: as written)."""
        return tuple(dev.conductance(drifted) for _, dev in self.arrays) + (None,) * (
            2 - len(self.arrays))

    def programming_sum(self, counts: np.ndarray) -> float:
        """sum over devices of |pulses| x G (S) at the conductances before they fire, for the
        signed counts (n_out, n_in) of the pulses (a differential pair's G- takes -counts)."""
        n = np.ascontiguousarray(counts, dtype=np.int64).reshape(-1)
        return float(sum(abs_count_dot(n, np.ascontiguousarray(dev.conductance()).reshape(-1))
                         for _, dev in self.arrays))

    def at_bound_fraction(self) -> float:
        return float(np.mean([dev.at_bound_fraction() for _, dev in self.arrays]))

    def advance(self, seconds: float) -> None:
        for _, dev in self.arrays:
            dev.advance(seconds)


class DifferentialPair(SignedMapping):
    """``W = S (u+ - u-)`` on two devices per weight (G+ and G- in neighbouring columns)."""

    name = "differential"

    def __init__(self, card, shape, rng, scale):
        super().__init__(card, shape, rng, scale)
        self.pos = DeviceArray(card, shape, rng)
        self.neg = DeviceArray(card, shape, rng)
        self.arrays = (("pos", self.pos), ("neg", self.neg))

    @property
    def weight_per_S(self) -> float:
        """Weight units per siemens of sensed conductance difference."""
        return self.scale / self.span_S

    @property
    def S_per_weight(self) -> float:
        return self.span_S / self.scale

    def program(self, W: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Write target weights W (n_out, n_in); ``rng`` draws the programming noise (default
        the devices' own generator)."""
        self.pos.program(self._u_to_w(0.5 + W / (2 * self.scale)), rng)
        self.neg.program(self._u_to_w(0.5 - W / (2 * self.scale)), rng)

    def weights(self, gp: np.ndarray, gn: np.ndarray, dtype=np.float64) -> np.ndarray:
        """``S (u+ - u-)`` (n_out, n_in) from the pair's conductances (S), in one pass
        (computed in float64, returned in ``dtype``)."""
        return pair_weights(np.ascontiguousarray(gp, dtype=float),
                            np.ascontiguousarray(gn, dtype=float), float(self.card.g_min_S),
                            float(self.span_S), float(self.scale), np.empty(gp.shape, dtype))

    def change_exact(self, dw_dev: np.ndarray) -> None:
        self.pos.update_exact(dw_dev)
        self.neg.update_exact(-dw_dev)

    def pulse(self, n: np.ndarray) -> int:
        """Fire the signed counts n (n_out, n_in): +n on G+, -n on G- (one list of the
        nonzero counts serves both)."""
        nonzero = pulse_counts_flat(n)
        return self.pos.pulse(n, 1, nonzero) + self.neg.pulse(n, -1, nonzero)

    def device_noise(self, rel_std: float, rng: np.random.Generator) -> np.ndarray:
        """Weight change (n_out, n_in) of one read's conductance noise, std ``rel_std * G``."""
        gp, gn = self.pos.conductance(), self.neg.conductance()
        dg = gp * rel_std * rng.standard_normal(gp.shape)
        dg -= gn * rel_std * rng.standard_normal(gn.shape)
        return self.scale * dg / self.span_S

    def physical_tile(self, gp: np.ndarray, gn: np.ndarray) -> np.ndarray:
        """Physical conductances (rows, 2 n_out) of one tile: G+ and G- interleaved."""
        n_out, n_in = gp.shape
        G = np.empty((n_in, 2 * n_out))
        G[:, 0::2] = gp.T
        G[:, 1::2] = gn.T
        return G

    def combination(self, n_out: int) -> np.ndarray:
        """C (n_out, 2 n_out): output j = I+_j - I-_j of the sensed physical columns."""
        C = np.zeros((n_out, 2 * n_out))
        C[np.arange(n_out), 2 * np.arange(n_out)] = 1.0
        C[np.arange(n_out), 2 * np.arange(n_out) + 1] = -1.0
        return C

    def line_sums(self, gp: np.ndarray, gn: np.ndarray) -> tuple:
        """Per tile (G (n_out, n_in) blocks): (conductance on each driven row (n_in,), on each
        driven output (n_out,), reference-column conductance) in S, for the read energy."""
        return gp.sum(axis=0) + gn.sum(axis=0), gp.sum(axis=1) + gn.sum(axis=1), 0.0


class ReferenceColumn(SignedMapping):
    """``W = S (2 u - 1)``: one device per weight, a shared column at mid conductance."""

    name = "reference"

    def __init__(self, card, shape, rng, scale):
        super().__init__(card, shape, rng, scale)
        self.pos = DeviceArray(card, shape, rng)
        self.neg = None
        self.arrays = (("pos", self.pos),)

    @property
    def weight_per_S(self) -> float:
        return self.scale / self.span_S * 2.0

    @property
    def S_per_weight(self) -> float:
        return self.span_S / (2 * self.scale)

    def program(self, W: np.ndarray, rng: np.random.Generator | None = None) -> None:
        self.pos.program(self._u_to_w(0.5 + W / (2 * self.scale)), rng)

    def weights(self, gp: np.ndarray, gn=None, dtype=np.float64) -> np.ndarray:
        """``S (2 u - 1)`` (n_out, n_in) from the devices' conductances (S), in one pass
        (computed in float64, returned in ``dtype``)."""
        return reference_weights(np.ascontiguousarray(gp, dtype=float),
                                 float(self.card.g_min_S), float(self.span_S),
                                 float(self.scale), np.empty(gp.shape, dtype))

    def change_exact(self, dw_dev: np.ndarray) -> None:
        self.pos.update_exact(dw_dev)

    def pulse(self, n: np.ndarray) -> int:
        return self.pos.pulse(n)

    def device_noise(self, rel_std: float, rng: np.random.Generator) -> np.ndarray:
        gp = self.pos.conductance()
        dg = gp * rel_std * rng.standard_normal(gp.shape)
        return 2 * self.scale * dg / self.span_S

    def physical_tile(self, gp: np.ndarray, gn=None) -> np.ndarray:
        """Physical conductances (rows, n_out + 1): the devices, then the reference column."""
        n_out, n_in = gp.shape
        G = np.empty((n_in, n_out + 1))
        G[:, :n_out] = gp.T
        G[:, n_out] = self.g_ref_S
        return G

    def combination(self, n_out: int) -> np.ndarray:
        """C (n_out, n_out + 1): output j = I_j - I_ref."""
        C = np.zeros((n_out, n_out + 1))
        C[np.arange(n_out), np.arange(n_out)] = 1.0
        C[:, n_out] = -1.0
        return C

    def line_sums(self, gp: np.ndarray, gn=None) -> tuple:
        """As :meth:`DifferentialPair.line_sums`; the reference column is read forward
        (every row drives it) but not driven in the transposed read (0 V; the periphery
        subtracts ``g_ref sum_j V_j`` from each row digitally), so it draws no energy there."""
        return gp.sum(axis=0) + self.g_ref_S, gp.sum(axis=1), 0.0


MAPPINGS = {m.name: m for m in (DifferentialPair, ReferenceColumn)}

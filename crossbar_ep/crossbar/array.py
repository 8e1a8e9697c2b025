"""A weight matrix stored in resistive crossbar tiles: the weight-operator facade.

Mapping (documented rule): a projection's weights W (n_out, n_in) are stored as normalised
conductances ``u = (G - G_min) / (G_max - G_min)`` in [0, 1] with a per-layer scale ``S``
(weight units per unit of u):

- differential pairs: ``W = S (u+ - u-)``, programmed symmetrically ``u+- = 1/2 +- W / (2 S)``;
- one device plus a reference column at mid conductance: ``W = S (2 u - 1)``.

``S = weight_range_factor * max |W_init|``, so the initial weights use ``1 / factor`` of the
range and training has headroom.  The array is composed of parts with one job each:

- the mapping (:mod:`crossbar_ep.crossbar.mapping`) owns the device arrays;
- the tiled reader (:mod:`crossbar_ep.crossbar.reader`: tiles, DAC/ADC, read noise, IR-drop
  operands, ADC calibration, probes) performs the reads;
- the pulse rule (:mod:`crossbar_ep.crossbar.pulses`) bound to this array turns updates into
  pulses; its state is its own;
- the energy model (:mod:`crossbar_ep.crossbar.array_energy`) prices reads and pulses;
- drift compensation (:mod:`crossbar_ep.crossbar.drift`) computes a digital output gain.

:class:`CrossbarMatrix` itself is the :class:`~crossbar_ep.model.operators.WeightOperator`
(reads, update, dense view), the clock and the state dict.
"""

from __future__ import annotations

import numba
import numpy as np

from crossbar_ep import fastrng
from crossbar_ep.circuit.ir_drop import WireSettings
from crossbar_ep.circuit.iv import IVLaw
from crossbar_ep.crossbar.array_energy import ArrayEnergy
from crossbar_ep.crossbar.drift import DriftCompensation
from crossbar_ep.crossbar.mapping import MAPPINGS
from crossbar_ep.crossbar.periphery import (  # noqa: F401  (re-exported)
    Periphery,
    abs_max_read,
    dac_kernel,
    quantize,
    seed_read_lanes,
    sense_accumulate,
    sense_rows,
)
from crossbar_ep.crossbar.reader import TiledReader
from crossbar_ep.crossbar.tiles import Tiling
from crossbar_ep.devices.card import DeviceCard
from crossbar_ep.model.operators import WeightOperator


@numba.njit(cache=True)
def _round_pulses(dw, factor, cap, seed, out):
    """out = stochastic_round(dw * factor) clipped to +-cap (cap < 0: no cap); the uniforms
    come from the counter-based stream ``seed``."""
    k = fastrng.key(seed)
    for i in range(dw.size):
        x = dw[i] * factor
        f = np.floor(x)
        n = np.int64(f) + (1 if fastrng.uniform(k, i) < x - f else 0)
        if cap >= 0:
            n = min(max(n, -cap), cap)
        out[i] = n


_NO_WRITE = {"pulses": 0, "program_J": 0.0, "counts": None}


class CrossbarMatrix(WeightOperator):
    """One weight matrix on crossbar tiles: device state, effective weights and reads; a
    :class:`~crossbar_ep.model.operators.WeightOperator` that learns by conductance pulses.

    Keyword-only options (each also an attribute): ``rule``, a pulse rule
    (:mod:`crossbar_ep.crossbar.rules`) bound to this array, turning the local EP signals into
    pulses with the pulse gain ``lr`` (without one, updates use deterministic pulse counts);
    ``seconds_per_update`` (s, default 0), the simulated time one update (one training batch)
    takes: every :meth:`update` advances the devices' clocks by it before its pulses, whose
    refresh then shows the drift to the reads that follow; ``drift_compensation`` (none,
    global or column, :mod:`crossbar_ep.crossbar.drift`).
    """

    def __init__(self, W_init: np.ndarray, card: DeviceCard, rng: np.random.Generator,
                 periphery: Periphery = Periphery(), signed: str = "differential",
                 tile_rows: int = 256, tile_cols: int = 256,
                 weight_range_factor: float = 2.0, dtype=np.float32,
                 wires: WireSettings = WireSettings(), iv: IVLaw = IVLaw(), *,
                 rule=None, lr: float = 1.0, seconds_per_update: float = 0.0,
                 drift_compensation: str = "none"):
        super().__init__()
        iv.check_reads(signed, wires.ideal)
        self.card, self.rng = card, rng
        self.signed, self.dtype = signed, np.dtype(dtype)
        self.n_out, self.n_in = W_init.shape
        wmax = float(np.max(np.abs(W_init))) or 1.0
        self.scale = weight_range_factor * wmax
        if signed not in MAPPINGS:
            raise ValueError(f"signed {signed!r}: use {' or '.join(MAPPINGS)}")
        self.mapping = MAPPINGS[signed](card, W_init.shape, rng, self.scale)
        self.pos, self.neg = self.mapping.pos, self.mapping.neg
        self.tiling = Tiling(self.n_out, self.n_in, tile_rows, tile_cols)
        self.reader = TiledReader(self.tiling, self.mapping, periphery, wires, iv, rng,
                                  self.dtype)
        self.energy = ArrayEnergy(self.reader, self.mapping, card)
        self._rule = None
        self.lr = lr
        self.lr_base = lr     # the pulse gain training.lr_schedule scales from
        self.seconds_per_update = float(seconds_per_update)  # s each update advances clocks
        self.compensation = DriftCompensation(drift_compensation)
        self._last_write = _NO_WRITE      # the last update's record (pulses, energy, counts)
        self._stale = False
        self.program(W_init)
        self.compensation.take_reads()    # programming's own calibration: not training's
        if rule is not None:
            self.rule = rule

    # ------------------------------------------------------------------ parts
    @property
    def rule(self):
        """The pulse rule bound to this array (None: deterministic counts, no state)."""
        return self._rule

    @rule.setter
    def rule(self, rule) -> None:
        self._rule = None if rule is None else rule.bind(self)

    @property
    def drift_compensation(self) -> str:
        """none | global | column: the digital output gain undoing drift
        (:mod:`crossbar_ep.crossbar.drift`).  Set after construction, a mode other than none
        records the calibration reference of the devices now (:meth:`calibrate`; like
        programming's, that read is not counted in the updates' ``calibration_reads``)."""
        return self.compensation.mode

    @drift_compensation.setter
    def drift_compensation(self, mode: str) -> None:
        before = self.compensation.mode
        self.compensation.set_mode(mode)
        if self.pos.drifts and (mode != "none" or before != "none"):
            self.calibrate()
            self.compensation.take_reads()

    @property
    def compensating(self) -> bool:
        """Drift compensation is on and the devices' reads depend on the clock."""
        return self.compensation.mode != "none" and self.pos.drifts

    @property
    def calibration_reads(self) -> int:
        """Calibration input vectors read so far (drift compensation)."""
        return self.compensation.reads

    per = property(lambda self: self.reader.per, doc="The periphery (converters, read noise).")
    wires = property(lambda self: self.reader.wires, doc="The wire settings of every tile.")
    iv = property(lambda self: self.reader.iv, doc="The device I-V law of the reads.")
    W_eff = property(lambda self: self.reader.W_eff,
                     doc="The effective weight matrix (n_out, n_in) the reads realise.")
    row_tiles = property(lambda self: self.tiling.row_tiles, doc="Input slices of the tiles.")
    col_tiles = property(lambda self: self.tiling.col_tiles, doc="Output slices of the tiles.")
    probes = property(lambda self: self.reader.probes, doc="Recorded tiles -> probes.")

    @property
    def fwd_range(self):
        """ADC full scale per tile key of the forward reads (None: ideal ADC)."""
        return self.reader.adc.ranges[False]

    @property
    def bwd_range(self):
        """ADC full scale per tile key of the transposed reads (None: ideal ADC)."""
        return self.reader.adc.ranges[True]

    @property
    def rule_state(self) -> dict:
        """The bound rule's per-array state (accumulator, fast array, ...)."""
        return self._rule.state if self._rule is not None else {}

    @property
    def rule_info(self) -> dict:
        """The bound rule's statistics of the last update."""
        return self._rule.info if self._rule is not None else {}

    # ------------------------------------------------------------------ public accessors
    def device_arrays(self) -> tuple:
        """(side, :class:`~crossbar_ep.devices.DeviceArray`) pairs: ``pos`` and ``neg`` of
        a differential pair, ``pos`` alone with the reference column."""
        return self.mapping.arrays

    @property
    def differential(self) -> bool:
        """Whether each weight is a differential pair (G+, G-)."""
        return self.mapping.neg is not None

    def conductances(self) -> tuple:
        """(G+ or G, G- or None), each (n_out, n_in) in S, at the present clock."""
        return self.mapping.conductances()

    def read_operand(self, tile: tuple, transposed: bool = False) -> np.ndarray:
        """The matrix tile ``(row tile, column tile)``'s reads multiply by, before noise
        and ADC (output units per input unit): forward (tile inputs, tile outputs), transposed
        (tile outputs, tile inputs); with wire resistance the tile's nodal effective map."""
        return self.reader.operand(self.tiling.key(tile), transposed)

    @property
    def has_wires(self) -> bool:
        """Wire resistance in the reads (each tile read through its nodal effective map)."""
        return self.reader.has_wires

    def dac(self, v: np.ndarray) -> np.ndarray:
        """The DAC's output for inputs v (state units), as a read drives it (a reused buffer:
        copy it to keep it)."""
        return self.reader.dac.convert(v)

    # ------------------------------------------------------------------ programming, clock
    def program(self, W: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Write target weights W (n_out, n_in, weight units) through the device model: the
        card's programming noise (drawn from ``rng``, default the array's generator),
        clipping to the device bounds; every device's write time is the present clock, from
        which :meth:`age` counts."""
        self.mapping.program(np.asarray(W, float), rng)
        self._t_programmed = self.t_now
        self.compensation.reference = None    # the refresh records a new reference
        self.refresh(exact=True)

    def calibrate(self) -> None:
        """Record the drift compensation's reference now: a calibration read of the devices
        as they are (done right after every :meth:`program`; call it after rewriting an
        array by other means); no effect without drift compensation."""
        self.compensation.reference = None
        self.refresh()

    def refresh(self, exact: bool = False) -> None:
        """Recompute the effective weight matrix from the conductances (after writes,
        drift or time steps), the per-tile read operands (with IR drop: an exact nodal solve
        every ``wires.refresh_every`` calls or when ``exact``, first order in between) and
        the per-tile ADC ranges.  With drift compensation on a drifting card, a calibration
        read of the raw array gives the digital output gain
        (:mod:`crossbar_ep.crossbar.drift`)."""
        m = self.mapping
        gp, gn = m.conductances()
        # in the compute dtype directly unless the compensation gain still multiplies it
        W = m.weights(gp, gn, float if self.compensating else self.dtype)
        self.reader.set_weights(W, gp, gn, exact)
        self.energy.invalidate()
        if self.compensating:
            c = self.compensation
            self.reader.apply_gain(W, c.gain(c.measure(self.reader, self._notify())))
        self._stale = False
        self.changed()

    def _notify(self):
        return self.notify_read if self.observers else None

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass on the devices' clocks; with a drifting card
        (or a device read-noise law) the effective weights are recomputed (no work
        otherwise)."""
        self.mapping.advance(seconds)
        if self.pos.drifts:
            self.refresh()

    @property
    def t_now(self) -> float:
        """The devices' clock (s)."""
        return float(self.pos.t_now)

    @property
    def age(self) -> float:
        """Seconds on the clock since the array was last programmed (:meth:`program`)."""
        return self.t_now - self._t_programmed

    def advance_to(self, t_s: float) -> None:
        """Move the clock to ``t_s`` seconds after the last programming (t_s >= :attr:`age`):
        the card's drift acts for that time and its device read noise is redrawn for it, so
        the reads that follow are those of the array at t_s (evaluation of retention)."""
        dt = float(t_s) - self.age
        if dt < 0:
            raise ValueError(f"advance_to({t_s!r}): the array is already {self.age:g} s past "
                             f"its programming; the clock only moves forward")
        self.advance(dt)

    def set_periphery(self, periphery: Periphery) -> None:
        """Swap the converters and read noise (a measurement's variants); ADC recalibrated."""
        self.reader.set_converters(periphery)
        self.reader.calibrate()

    # ------------------------------------------------------------------ reads
    @property
    def ideal_reads(self) -> bool:
        """Every read is an exact product with W_eff (ideal periphery, wires and I-V law)."""
        return self.reader.ideal

    @property
    def exact_linear(self) -> bool:
        return self.reader.ideal

    def dense(self) -> np.ndarray:
        return self.reader.W_eff

    def read_into(self, v: np.ndarray, out: np.ndarray, gain: float = 1.0,
                  accumulate: bool = False, transposed: bool = False) -> np.ndarray:
        """``out (+)= gain * read(v)`` in place; out is C-contiguous in the compute dtype.

        Forward (``transposed=False``): rows driven by v (B, n_in), columns sensed, out
        (B, n_out) ~ v @ W^T.  Transposed: columns driven by v (B, n_out), rows sensed, out
        (B, n_in) ~ v @ W.  ``gain`` is the sense-amplifier gain applied after the ADC.
        """
        return self.reader.read(v, out, gain, accumulate, transposed,
                                self.notify_read if self.observers else None)

    def read_transposed_into(self, y: np.ndarray, out: np.ndarray, gain: float = 1.0,
                             accumulate: bool = False) -> np.ndarray:
        """Columns driven by y (B, n_out), rows sensed: ``out (+)= gain * read(y) ~ y @ W``."""
        return self.read_into(y, out, gain, accumulate, transposed=True)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Rows driven by x (B, n_in), columns sensed: returns (B, n_out) ~ x @ W^T."""
        return self.read_into(x, np.empty((x.shape[0], self.n_out), self.dtype))

    def transposed(self, y: np.ndarray) -> np.ndarray:
        """Columns driven by y (B, n_out), rows sensed: returns (B, n_in) ~ y @ W."""
        return self.read_transposed_into(y, np.empty((y.shape[0], self.n_in), self.dtype))

    def watch_tile(self, tile: tuple, probe) -> None:
        """Record the reads of tile (row tile, column tile): ``probe.record(transposed,
        current_A, adc_codes)`` after each read of it (``probe.samples`` rows)."""
        self.reader.probes[tile] = probe

    def unwatch_tile(self, tile: tuple) -> None:
        self.reader.probes.pop(tile, None)

    def current_factor(self) -> float:
        """Amperes of differential sensed current per output unit (weight x state)."""
        return self.reader.current_factor()

    def ir_drop_deviation(self) -> tuple[float, float]:
        """(sum of squares of W_read - W_eff over the forward tile operands, sum of squares of
        W_eff): how far IR drop moves the weights the reads see from the programmed ones."""
        return self.reader.ir_drop_deviation()

    # ------------------------------------------------------------------ energy
    def read_energy(self, v: np.ndarray, transposed: bool = False) -> tuple[float, int, int]:
        """(array energy in J, DAC conversions, ADC conversions) of one read driven by v
        (:meth:`~crossbar_ep.crossbar.array_energy.ArrayEnergy.read_energy`)."""
        return self.energy.read_energy(v, transposed)

    def program_energy(self, counts: np.ndarray) -> float:
        """Energy (J) of the signed pulse counts (n_out, n_in) at the present conductances."""
        return self.energy.program_energy(counts)

    # ------------------------------------------------------------------ writes
    @property
    def last_write(self) -> dict:
        """The last update's record: ``pulses`` fired, ``program_J`` (J), ``counts`` (signed
        (n_out, n_in), None for exact updates), and the rule's statistics."""
        return self._last_write

    @property
    def last_counts(self):
        """Signed pulse counts (n_out, n_in) of the last update (None: no pulses)."""
        return self._last_write.get("counts")

    @property
    def last_program_J(self) -> float:
        """Programming energy (J) of the last update."""
        return self._last_write.get("program_J", 0.0)

    def pulse_counts(self, dW: np.ndarray, max_pulses: int | None = None) -> np.ndarray:
        """Deterministic scheme: signed pulse counts per device for a weight change dW,
        ``n = stochastic_round(dW / (device step in weight units))``, capped at ``max_pulses``.
        For a differential pair each device takes half the change, in opposite directions."""
        dW = np.ascontiguousarray(dW, dtype=float)
        n = np.empty(dW.shape, np.int64)
        _round_pulses(dW.reshape(-1), self.mapping.pulse_factor(),
                      -1 if max_pulses is None else int(max_pulses),
                      int(self.rng.integers(0, 2**62)), n.reshape(-1))
        return n

    def apply_update(self, dW: np.ndarray, max_pulses: int | None = None) -> int:
        """Change the stored weights by ~dW (weight units, (n_out, n_in)); returns the number
        of pulses fired (0 for the ideal device, which takes the exact change)."""
        if not self.card.pulsed:
            self.mapping.change_exact(self.mapping.device_change(dW))
            self._last_write = dict(_NO_WRITE)
            self.refresh()
            return 0
        return self.write_pulses(self.pulse_counts(dW, max_pulses))

    def write_pulses(self, n: np.ndarray) -> int:
        """Fire the signed counts n (n_out, n_in) through the mapping (a differential pair's
        G- takes -n), keep them and their programming energy, refresh the read operands;
        returns the pulses fired.  An all-zero n touches no device (no write noise redrawn)
        and skips the refresh unless the clock moved on a drifting card since the last one."""
        if not n.any():
            self._last_write = {"pulses": 0, "program_J": 0.0, "counts": n}
            if self._stale:
                self.refresh()
            return 0
        fired, _ = self.fire(n)
        self.refresh()
        return fired

    def fire(self, n: np.ndarray) -> tuple[int, float]:
        """Fire the signed counts n (n_out, n_in) without refreshing the read operands (call
        :meth:`refresh` after); records them; returns (pulses fired, programming energy J
        at the conductances before they fire)."""
        program_J = self.program_energy(n)
        fired = self.mapping.pulse(n)
        self._last_write = {"pulses": fired, "program_J": program_J, "counts": n}
        return fired, program_J

    def at_bound_fraction(self) -> float:
        return self.mapping.at_bound_fraction()

    # ------------------------------------------------------------------ operator protocol
    def update(self, pre: np.ndarray, delta: np.ndarray, scale: float) -> None:
        """In-situ EP update: the pulse rule turns ``lr * scale * delta.T @ pre`` (pre
        (B, n_in), delta (B, n_out)) into pulses; observers get the pulses fired, the
        programming energy and the signed counts.  The batch's simulated time
        (``seconds_per_update``) passes first; the refresh after the pulses shows the drift."""
        if self.seconds_per_update:
            self.mapping.advance(self.seconds_per_update)
            self._stale = self.pos.drifts    # the refresh after the pulses shows the drift
        if self._rule is None:
            g = scale * (np.asarray(delta).T @ np.asarray(pre))
            self.apply_update(self.lr * g)
        else:
            self._last_write = self._rule.apply(pre, delta, scale)
        if self.compensating:     # the calibration reads since the last update
            self._last_write = {**self._last_write,
                                "calibration_reads": self.compensation.take_reads()}
        self.notify_update(self._last_write)

    def state_dict(self) -> dict:
        """Device states per side: ``{side}:w``, ``{side}:write_noise``, ``{side}:t_written``
        (flat arrays) and ``{side}:t_now`` (the clock, s, a 0-d array); with laws that need
        them, ``{side}:g_target`` (programming targets, S) and ``{side}:read_xi`` (the
        present read-noise normals); the bound rule's state as ``rule:<key>``."""
        out = {}
        for side, dev in self.mapping.arrays:
            out[f"{side}:w"] = dev.w
            out[f"{side}:write_noise"] = dev.write_noise
            out[f"{side}:t_written"] = dev.t_written
            out[f"{side}:t_now"] = np.array(dev.t_now)
            if dev.g_target is not None:
                out[f"{side}:g_target"] = dev.g_target
            if dev.read_xi is not None:
                out[f"{side}:read_xi"] = dev.read_xi
        if self.compensation.reference is not None:
            out["calibration:reference"] = self.compensation.reference
        if self._rule is not None:    # mixed precision, Tiki-Taka: rule:<key>
            out.update({f"rule:{k}": v for k, v in self._rule.state_dict().items()})
        return out

    @property
    def optional_state(self) -> set:
        """State-dict keys an older checkpoint may lack (:meth:`load_state_dict` fills them)."""
        keys = {f"{side}:{k}" for side, _ in self.mapping.arrays
                for k in ("t_now", "g_target", "read_xi")} | {"calibration:reference"}
        if self._rule is not None:
            keys |= {f"rule:{k}" for k in self._rule.optional_state()}
        return keys

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`.  Older layouts: a state without ``t_now`` keeps the
        clock at its time now; without ``g_target`` the targets are the conductances as
        written; without ``read_xi`` no read-noise fluctuation until the clock moves;
        without ``calibration:reference`` (drift compensation on) the reference is a
        calibration read of the devices as written (before drift)."""
        for side, dev in self.mapping.arrays:
            np.copyto(dev.w, state[f"{side}:w"])
            dev.write_noise = np.array(state[f"{side}:write_noise"])
            np.copyto(dev.t_written, state[f"{side}:t_written"])
            if f"{side}:t_now" in state:
                dev.t_now = float(state[f"{side}:t_now"])
            if dev.g_target is not None:
                g = state.get(f"{side}:g_target")
                dev.g_target = (np.array(g, float) if g is not None else
                                dev.card.w_to_g(dev.states().reshape(-1)))
            if dev.read_xi is not None:
                xi = state.get(f"{side}:read_xi")
                dev.read_xi = np.array(xi, float) if xi is not None else \
                    np.zeros_like(dev.read_xi)
            dev.touch()
        if self._rule is not None:
            self._rule.load_state_dict({k[5:]: v for k, v in state.items()
                                        if k.startswith("rule:")})
        ref = state.get("calibration:reference")
        self.compensation.reference = None if ref is None else np.array(ref, float)
        if ref is None and self.compensating:    # the devices as written, read
            m = self.mapping
            gp, gn = m.conductances(drifted=False)
            self.reader.set_weights(m.weights(gp, gn), gp, gn, True)
            self.energy.invalidate()
            self.compensation.reference = self.compensation.measure(self.reader,
                                                                    self._notify())
        self.refresh(exact=True)

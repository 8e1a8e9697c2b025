"""Device arrays: the state of every device of one array, updated pulse by pulse, with a clock.

A :class:`DeviceArray` draws each device's parameters once from the card's device-to-device
spreads (seeded) through its model class (:mod:`crossbar_ep.devices.models`), marks stuck-at
faults, applies signed pulse counts one pulse at a time through the model's step in the Numba
pulse kernel (state-dependent step, cycle-to-cycle noise, clipping to the device's own bounds),
adds write noise to the readable state, and returns conductances in siemens with the card's
laws (:mod:`crossbar_ep.devices.laws`) applied: programming noise when targets are written,
power-law drift for the simulated time since each device was written, and the device read
noise at the present time.

The clock: ``t_now`` (s) is the array's simulated time; :meth:`DeviceArray.advance` moves it
on (a crossbar operator advances it by the time of one training batch at every update), pulses
and programming stamp ``t_written`` of the devices they write, and reads see the drift
``((t_now - t_written + t0) / t0) ** -nu``.

States ``w`` are in the card's normalised units on [w_min, w_max]; shapes are (rows, cols).
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.devices.laws import PCM_G_REF_S as G_REF_PCM_S  # noqa: F401 (older names)
from crossbar_ep.devices.laws import RERAM_G_REF_S as G_REF_RERAM_S  # noqa: F401
from crossbar_ep.devices.laws import make_law

NO_FAULT, STUCK_MIN, STUCK_MAX = 0, 1, 2


def pulse_reference(card, w: float, pulses: int) -> np.ndarray:
    """Trajectory of one noiseless nominal device (no spreads): the states after each of
    ``|pulses|`` pulses of sign(pulses), by the model's step run in plain Python (the same
    function the Numba kernel compiles), clipped to the card's bounds."""
    model = card.model_class
    cols = model.draw(card, lambda: np.zeros(1), 1)
    p = np.array([float(v[0]) for v in cols.values()])
    c = np.asarray(model.constants(card), float)
    lo, hi = card.w_min, card.w_max
    d = 1 if pulses > 0 else -1
    out = []
    for _ in range(abs(pulses)):
        step, _add = model.step(w, d, lo, hi, p, c)
        w = min(max(w + step, lo), hi)
        out.append(w)
    return np.array(out, float)


class DeviceArray:
    """The devices of one (rows, cols) array with their own drawn parameters, states and
    clock.  ``card.model_class`` supplies the parameter draw and the pulse step."""

    def __init__(self, card, shape: tuple, rng: np.random.Generator,
                 w_init: float | None = None):
        self.card, self.shape, self.rng = card, tuple(shape), rng
        self.model = model = card.model_class
        self.pulsed = model.pulsed
        n = int(np.prod(shape))
        xi = lambda: rng.standard_normal(n)  # noqa: E731
        self.wmin, self.wmax = model.draw_bounds(card, xi, n)
        # the model's own per-device parameters (name -> (n,)), stacked for the kernel
        self.device_params = model.draw(card, xi, n) if self.pulsed else {}
        cols = [np.asarray(v, float) for v in self.device_params.values()]
        self._P = np.ascontiguousarray(np.stack(cols, axis=1)) if cols else np.empty((n, 0))
        self._c = np.ascontiguousarray(model.constants(card), dtype=float)
        self.std = model.c2c_std(card) if self.pulsed else 0.0
        # faults, drawn once
        self.stuck = np.zeros(n, np.int8)
        f = card.faults
        u = rng.random(n)
        a0, a1 = f.get("stuck_at_gmin_frac", 0.0), f.get("stuck_at_gmax_frac", 0.0)
        self.stuck[u < a0] = STUCK_MIN
        self.stuck[(u >= a0) & (u < a0 + a1)] = STUCK_MAX
        # the card's laws (crossbar_ep.devices.laws); drift: one xi per device, nu from the
        # law at read time
        self.programming_law = make_law("programming_noise", card.programming_noise)
        self.drift_law = make_law("drift", card.drift)
        self.read_noise_law = make_law("read_noise", getattr(card, "read_noise", None))
        self.nu_xi = rng.standard_normal(n) if card.drift else None
        self.t_written = np.zeros(n)
        self.t_now = 0.0
        self.w = np.zeros(n) if w_init is None else np.full(n, float(w_init))
        if self.pulsed:
            np.clip(self.w, self.wmin, self.wmax, out=self.w)
        self.write_noise = np.zeros(n)
        # the programming targets (S), kept where a law depends on them
        self.uses_target = bool(self.read_noise_law.active or (
            self.drift_law is not None and self.drift_law.basis == "target"))
        self.g_target = card.w_to_g(self.w) if self.uses_target else None
        # read noise: one standard normal per device, redrawn when the clock moves
        self.read_xi = np.zeros(n) if self.read_noise_law.active else None
        self._g = None      # conductances of the present state and clock (read-only)

    def touch(self) -> None:
        """Forget the cached conductances: call after writing ``w``, ``write_noise``,
        ``t_written``, ``t_now`` or ``stuck`` directly (the methods here do it themselves)."""
        self._g = None

    def __getattr__(self, name):
        """A drawn per-device parameter by name (``dw_up``, ``gamma_up``, ...), flat (n,)."""
        params = self.__dict__.get("device_params", {})
        if name in params:
            return params[name]
        model = getattr(self.__dict__.get("card"), "model", "?")
        raise AttributeError(f"{type(self).__name__} of model {model!r} has no attribute "
                             f"{name!r}")

    @property
    def drifts(self) -> bool:
        """Whether reads depend on the clock (the card has drift or a device read-noise law)."""
        return bool(self.card.drift) or self.read_xi is not None

    # ------------------------------------------------------------------ updates
    def pulse(self, n_pulses: np.ndarray, sign: int = 1, nonzero: tuple | None = None) -> int:
        """Apply signed pulse counts ``sign * n_pulses`` (shape of the array; + SET/
        potentiation, - RESET); returns the number of pulses applied (stuck devices receive
        none).  ``nonzero``: (flat indices, counts) of the nonzero counts of ``n_pulses`` when
        the caller has them (:func:`~crossbar_ep.devices.kernel.pulse_counts_flat`; the two
        sides of a pair share them)."""
        if not self.pulsed:
            raise TypeError(f"the {self.card.model} device takes exact updates "
                            f"(update_exact), not pulses")
        from crossbar_ep.devices.kernel import jit_step, pulse_counts_flat, pulse_devices, \
            step_id
        if np.size(n_pulses) != self.w.size:
            raise ValueError(f"pulse counts of shape {np.shape(n_pulses)} for an array of "
                             f"shape {self.shape}")
        idx, counts = pulse_counts_flat(n_pulses) if nonzero is None else nonzero
        step = self.model.step
        total = pulse_devices(step_id(step, self._P.shape[1]), jit_step(step), self.w, counts,
                              int(sign), idx, self.wmin, self.wmax, self._P, self._c,
                              self.stuck, float(self.std), int(self.rng.integers(0, 2**62)))
        if self.drifts or self.uses_target:
            if self.drifts:
                self.t_written[idx] = self.t_now
            if self.uses_target:      # the pulses' target: the conductance they reached
                self.g_target[idx] = self.card.w_to_g(self.w[idx])
        self._redraw_write_noise()
        self.touch()
        return int(total)

    def update_exact(self, dw: np.ndarray) -> None:
        """Exact models (``pulsed`` False, the ideal device): add an exact float change (no
        bounds, noise or pulses).  With laws that depend on the programming target, the
        devices changed are written: their target is the new conductance and their drift
        restarts."""
        dw = np.asarray(dw, float).reshape(-1)
        self.w += dw
        if self.uses_target:
            written = dw != 0
            self.g_target[written] = self.card.w_to_g(self.w[written])
            self.t_written[written] = self.t_now
        self.touch()

    def _redraw_write_noise(self) -> None:
        s = self.card.params.get("write_noise_std", 0.0)
        if s:
            self.write_noise = s * self.card.params["dw_min"] * \
                self.rng.standard_normal(self.w.size)

    def program(self, w_target: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Write target states directly (initial programming): the card's programming noise
        (:class:`~crossbar_ep.devices.laws.ProgrammingLaw`: additive Gaussian of std
        ``sigma_S(G_target)`` siemens, drawn from ``rng``, default the array's generator),
        then clipping to each device's bounds (and at 0 S where the law says so)."""
        w = np.asarray(w_target, float).reshape(-1).copy()
        card, law = self.card, self.programming_law
        if self.uses_target:
            self.g_target = card.w_to_g(w)
        if law.active:
            g = card.w_to_g(w)
            span_w = card.w_max - card.w_min
            span_g = card.g_max_S - card.g_min_S
            sigma_S = law.sigma_S(g)
            w += sigma_S / span_g * span_w * (rng or self.rng).standard_normal(w.size)
            if law.clip_at_zero:       # G >= 0: w >= the state of 0 S
                np.maximum(w, card.w_min - card.g_min_S / span_g * span_w, out=w)
        if self.pulsed:
            np.clip(w, self.wmin, self.wmax, out=w)
        self.w = w
        self.t_written[:] = self.t_now
        self._redraw_write_noise()
        self.touch()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass on the clock ``t_now`` (s); with drift,
        reads then see the conductances decayed for the time since each write; with a read-
        noise law, its fluctuation is redrawn for the new time."""
        self.t_now += float(seconds)
        if self.read_xi is not None:
            self.read_xi = self.rng.standard_normal(self.read_xi.size)
        if self.drifts:
            self.touch()

    # ------------------------------------------------------------------ reads
    def states(self) -> np.ndarray:
        """Readable states (rows, cols): hidden state + write noise; stuck devices at bounds."""
        w = self.w + self.write_noise if self.card.params.get("write_noise_std") else self.w
        if self.stuck.any():
            lo, hi = (self.wmin, self.wmax) if self.pulsed else (self.card.w_min,
                                                                  self.card.w_max)
            w = np.where(self.stuck == STUCK_MIN, lo, w)
            w = np.where(self.stuck == STUCK_MAX, hi, w)
        return w.reshape(self.shape)

    def fail(self, stuck_min_frac: float, stuck_max_frac: float,
             rng: np.random.Generator) -> int:
        """Faults that appear after programming: of the devices not stuck yet, the fractions
        ``stuck_min_frac`` get stuck at G_min (SA0) and ``stuck_max_frac`` at G_max (SA1),
        drawn from ``rng``; returns how many devices failed."""
        healthy = np.flatnonzero(self.stuck == 0)
        u = rng.random(healthy.size)
        a0, a1 = float(stuck_min_frac), float(stuck_max_frac)
        self.stuck[healthy[u < a0]] = STUCK_MIN
        self.stuck[healthy[(u >= a0) & (u < a0 + a1)]] = STUCK_MAX
        self.touch()
        return int(((u < a0 + a1)).sum())

    def conductance(self, drifted: bool = True) -> np.ndarray:
        """Conductances (S), shape (rows, cols), with drift for the time since each write
        (``drifted=False``: as written).  Read-only; the drifted ones are computed once per
        state and clock (see :meth:`touch`)."""
        if drifted and self._g is not None:
            return self._g
        if self.pulsed:     # states, w_to_g and the clip at 0 S in one pass
            from crossbar_ep.devices.kernel import state_conductance
            c = self.card
            noise = self.write_noise if c.params.get("write_noise_std") else self.w[:0]
            g = state_conductance(self.w, noise, self.stuck, self.wmin, self.wmax,
                                  float(c.w_min), float(c.w_max - c.w_min), float(c.g_min_S),
                                  float(c.g_max_S - c.g_min_S))
        else:
            g = self.card.w_to_g(self.states().reshape(-1))
        if drifted and self.drifts:
            if self.card.drift:
                g = g * self._drift_factor(g)
            if self.read_xi is not None:
                g = g + self.read_noise_law.sigma_S(self.g_target, g, self.t_now -
                                                    self.t_written) * self.read_xi
        g = g.reshape(self.shape)
        g.flags.writeable = False
        if drifted or not self.drifts:
            self._g = g
        return g

    def drift_exponents(self, g_written: np.ndarray | None = None) -> np.ndarray:
        """Each device's drift exponent nu (flat (n,)), from the drift law at its basis
        conductance (the conductance as written, or the programming target)."""
        law = self.drift_law
        if law.basis == "target":
            g = self.g_target
        else:
            g = self.card.w_to_g(self.states().reshape(-1)) if g_written is None else \
                g_written
            g = np.maximum(g, 0.0) if self.pulsed else g
        return law.exponent(g, self.nu_xi)

    def _drift_factor(self, g: np.ndarray) -> np.ndarray:
        """``((t_now - t_written + t0) / t0)^-nu`` per device, g the undrifted conductances."""
        return self.drift_law.factor(self.t_now - self.t_written, self.drift_exponents(g))

    def at_bound_fraction(self, tol: float = 1e-9) -> float:
        """Fraction of devices at (or within ``tol`` of their range from) one of their bounds,
        stuck devices included."""
        if not self.pulsed:
            return 0.0
        from crossbar_ep.devices.kernel import count_at_bound
        return count_at_bound(self.w, self.wmin, self.wmax, self.stuck, tol) / self.w.size

"""Device arrays: the state of every device of one array, updated pulse by pulse, with a clock.

A :class:`DeviceArray` draws each device's parameters once from the card's device-to-device
spreads (seeded) through its model class (:mod:`crossbar_ep.devices.models`), marks stuck-at
faults, applies signed pulse counts one pulse at a time through the model's step in the Numba
pulse kernel (state-dependent step, cycle-to-cycle noise, clipping to the device's own bounds),
adds write noise to the readable state, and returns conductances in siemens with power-law
drift applied for the simulated time since each device was written.

The clock: ``t_now`` (s) is the array's simulated time; :meth:`DeviceArray.advance` moves it
on (a crossbar operator advances it by the time of one training batch at every update), pulses
and programming stamp ``t_written`` of the devices they write, and reads see the drift
``((t_now - t_written + t0) / t0) ** -nu``.

States ``w`` are in the card's normalised units on [w_min, w_max]; shapes are (rows, cols).
"""

from __future__ import annotations

import numpy as np

NO_FAULT, STUCK_MIN, STUCK_MAX = 0, 1, 2
G_REF_PCM_S = 25e-6      # Nandakumar et al. 2019 normalise by G_max = 25 uS
G_REF_RERAM_S = 40e-6    # Wan et al. 2022, G_max = 40 uS


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
        # drift: one xi per device; nu from the card or the PCM law at read time
        self.nu_xi = rng.standard_normal(n) if card.drift else None
        self.t_written = np.zeros(n)
        self.t_now = 0.0
        self.w = np.zeros(n) if w_init is None else np.full(n, float(w_init))
        if self.pulsed:
            np.clip(self.w, self.wmin, self.wmax, out=self.w)
        self.write_noise = np.zeros(n)
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
        """Whether reads depend on the clock (the card has drift)."""
        return bool(self.card.drift)

    # ------------------------------------------------------------------ updates
    def pulse(self, n_pulses: np.ndarray) -> int:
        """Apply signed pulse counts (shape of the array; + SET/potentiation, - RESET);
        returns the number of pulses applied (stuck devices receive none)."""
        if not self.pulsed:
            raise TypeError(f"the {self.card.model} device takes exact updates "
                            f"(update_exact), not pulses")
        from crossbar_ep.devices.kernel import jit_step, pulse_kernel
        n = np.ascontiguousarray(n_pulses, dtype=np.int64).reshape(-1)
        total = pulse_kernel(jit_step(self.model.step), self.w, n, self.wmin, self.wmax,
                             self._P, self._c, self.stuck, float(self.std),
                             int(self.rng.integers(0, 2**62)))
        if self.card.drift:
            self.t_written[n != 0] = self.t_now
        self._redraw_write_noise()
        self.touch()
        return int(total)

    def update_exact(self, dw: np.ndarray) -> None:
        """Exact models (``pulsed`` False, the ideal device): add an exact float change (no
        bounds, noise or pulses)."""
        self.w += np.asarray(dw, float).reshape(-1)
        self.touch()

    def _redraw_write_noise(self) -> None:
        s = self.card.params.get("write_noise_std", 0.0)
        if s:
            self.write_noise = s * self.card.params["dw_min"] * \
                self.rng.standard_normal(self.w.size)

    def program(self, w_target: np.ndarray) -> None:
        """Write target states directly (initial programming): programming noise of the card,
        then clipping to each device's bounds."""
        w = np.asarray(w_target, float).reshape(-1).copy()
        pn = self.card.programming_noise
        model = pn.get("model", "none")
        if model != "none":
            g = self.card.w_to_g(w)
            span_w = self.card.w_max - self.card.w_min
            span_g = self.card.g_max_S - self.card.g_min_S
            if model == "constant":
                sigma_S = np.full_like(w, pn["std_S"])
            elif model == "pcm_nandakumar":
                x = g / G_REF_PCM_S
                sigma_S = np.maximum(0.26348 + 1.9650 * x - 1.1731 * x ** 2, 0.0) * 1e-6
            else:  # reram_wan
                x = g / G_REF_RERAM_S
                sigma_S = np.maximum(0.348 + 16.030 * x - 43.853 * x ** 2 + 45.393 * x ** 3
                                     - 16.815 * x ** 4, 0.0) * 1e-6
            w += sigma_S / span_g * span_w * self.rng.standard_normal(w.size)
        if self.pulsed:
            np.clip(w, self.wmin, self.wmax, out=w)
        self.w = w
        self.t_written[:] = self.t_now
        self._redraw_write_noise()
        self.touch()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass on the clock ``t_now`` (s); with drift,
        reads then see the conductances decayed for the time since each write."""
        self.t_now += float(seconds)
        if self.card.drift:
            self.touch()

    # ------------------------------------------------------------------ reads
    def states(self) -> np.ndarray:
        """Readable states (rows, cols): hidden state + write noise; stuck devices at bounds."""
        w = self.w + self.write_noise if self.card.params.get("write_noise_std") else self.w
        if self.pulsed and self.stuck.any():
            w = np.where(self.stuck == STUCK_MIN, self.wmin, w)
            w = np.where(self.stuck == STUCK_MAX, self.wmax, w)
        return w.reshape(self.shape)

    def conductance(self, drifted: bool = True) -> np.ndarray:
        """Conductances (S), shape (rows, cols), with drift for the time since each write
        (``drifted=False``: as written).  Read-only; the drifted ones are computed once per
        state and clock (see :meth:`touch`)."""
        if drifted and self._g is not None:
            return self._g
        g = self.card.w_to_g(self.states().reshape(-1))
        g = np.maximum(g, 0.0) if self.pulsed else g
        if self.card.drift and drifted:
            g = g * self._drift_factor(g)
        g = g.reshape(self.shape)
        g.flags.writeable = False
        if drifted or not self.card.drift:
            self._g = g
        return g

    def _drift_factor(self, g: np.ndarray) -> np.ndarray:
        d = self.card.drift
        t0 = d.get("t0_s", 20.0)
        if d.get("nu_model") == "pcm_nandakumar":
            x = np.maximum(g / G_REF_PCM_S, 1e-12)
            mu = np.clip(-0.0155 * np.log(x) + 0.0244, 0.049, 0.1)
            sd = np.clip(-0.0125 * np.log(x) - 0.0059, 0.008, 0.045)
        else:
            mu, sd = d.get("nu_mean", 0.0), d.get("nu_std", 0.0)
        nu = np.abs(mu + sd * self.nu_xi)
        dt = self.t_now - self.t_written
        return ((dt + t0) / t0) ** (-nu)

    def at_bound_fraction(self, tol: float = 1e-9) -> float:
        """Fraction of devices at (or within ``tol`` of their range from) one of their bounds,
        stuck devices included."""
        if not self.pulsed:
            return 0.0
        from crossbar_ep.devices.kernel import count_at_bound
        return count_at_bound(self.w, self.wmin, self.wmax, self.stuck, tol) / self.w.size

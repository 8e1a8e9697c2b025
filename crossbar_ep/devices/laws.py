"""Device laws beside the device models: programming noise, conductance drift and read noise.

A device card names each law in its own section, with the law's parameters (SI units):

    programming_noise: {law: pcm_joshi2020}                       # the older key `model` works too
    drift: {law: power, nu_mean: 0.05, nu_std: 0.01, t0_s: 20.0}  # `nu_model: pcm_nandakumar` too
    read_noise: {law: pcm_joshi2020, t_read_s: 2.5e-7}

Each law is a class registered under its name per kind (:data:`LAWS`), with ``params`` (name ->
:class:`~crossbar_ep.devices.registry.Param`) and the closed form it implements; a
:class:`~crossbar_ep.devices.array.DeviceArray` calls the law's methods on arrays of devices
(flat, shape (n,)).  A new law is one class here registered with :func:`register_law` plus a
test against its closed form.

Conventions: conductances ``g`` in siemens; ``x = g / g_ref_S`` the conductance normalised by
the law's reference conductance (25 uS for the PCM laws); times in seconds.
"""

from __future__ import annotations

import difflib
import math

import numpy as np

from crossbar_ep.devices.registry import REQUIRED, Param
from crossbar_ep.schema import Where

KINDS = ("programming_noise", "drift", "read_noise")
LAWS: dict = {kind: {} for kind in KINDS}

PCM_G_REF_S = 25e-6      # Nandakumar et al. 2019, Joshi et al. 2020 normalise by G_max = 25 uS
RERAM_G_REF_S = 40e-6    # Wan et al. 2022, G_max = 40 uS


def register_law(cls):
    """Class decorator: add a law under ``cls.kind`` and ``cls.name``."""
    if cls.kind not in LAWS or not cls.name:
        raise TypeError(f"{cls.__name__}: a law needs a kind in {KINDS} and a name")
    LAWS[cls.kind][cls.name] = cls
    return cls


class Law:
    """A law of one kind; ``params`` lists its card parameters, ``values`` holds them."""

    kind = ""
    name = ""
    summary = ""          # the closed form, one line for docs/devices.md
    params: dict = {}

    def __init__(self, **values):
        self.values = {k: (values[k] if k in values else p.default)
                       for k, p in self.params.items()}
        missing = [k for k, v in self.values.items() if v is REQUIRED]
        if missing:
            raise ValueError(f"{self.kind} law {self.name}: missing {', '.join(missing)}")

    def __getattr__(self, name):
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def active(self) -> bool:
        """False for the ``none`` law (nothing to compute)."""
        return self.name != "none"


def _poly(c: tuple, x: np.ndarray) -> np.ndarray:
    """``c0 + c1 x + c2 x^2 + ...`` summed left to right."""
    s = c[0] + c[1] * x
    for k in range(2, len(c)):
        s = s + c[k] * x ** k
    return s


# ---------------------------------------------------------------- programming noise
class ProgrammingLaw(Law):
    """Noise added when a target conductance is written (initial programming, export):
    additive Gaussian with std :meth:`sigma_S`; ``clip_at_zero`` clips the programmed
    conductance at 0 S (the device bounds clip pulsed devices anyway)."""

    kind = "programming_noise"
    clip_at_zero = False

    def sigma_S(self, g: np.ndarray) -> np.ndarray:
        """Std (S) of the programmed conductance for targets ``g`` (S), shape of g."""
        return np.zeros_like(g)


@register_law
class NoProgrammingNoise(ProgrammingLaw):
    name = "none"
    summary = "targets written exactly"


@register_law
class ConstantProgrammingNoise(ProgrammingLaw):
    name = "constant"
    summary = "`sigma = std_S`"
    params = {"std_S": Param(REQUIRED, "S", "std of the programmed conductance", "nonneg",
                             0.0, 1.0)}

    def sigma_S(self, g):
        return np.full_like(g, self.std_S)


class PolynomialProgrammingNoise(ProgrammingLaw):
    """``sigma(x) = max(sum_k c_k x^k, 0)`` uS with ``x = g / g_ref_S``."""

    coeffs_uS: tuple = ()
    g_ref_S = PCM_G_REF_S

    def sigma_S(self, g):
        x = g / self.g_ref_S
        return np.maximum(_poly(self.coeffs_uS, x), 0.0) * 1e-6


@register_law
class PCMNandakumarProgramming(PolynomialProgrammingNoise):
    name = "pcm_nandakumar"
    summary = ("`sigma = 0.26348 + 1.9650 x - 1.1731 x^2` uS, `x = g / 25 uS` "
               "(Nandakumar et al. 2019)")
    coeffs_uS = (0.26348, 1.9650, -1.1731)


@register_law
class PCMJoshiProgramming(PCMNandakumarProgramming):
    name = "pcm_joshi2020"
    summary = ("as `pcm_nandakumar`, the programmed conductance clipped at 0 S (the PCM "
               "statistical model of Joshi et al., Nat. Commun. 2020)")
    clip_at_zero = True


@register_law
class ReRAMWanProgramming(PolynomialProgrammingNoise):
    name = "reram_wan"
    summary = ("`sigma = 0.348 + 16.030 x - 43.853 x^2 + 45.393 x^3 - 16.815 x^4` uS, "
               "`x = g / 40 uS` (Wan et al., Nature 2022)")
    coeffs_uS = (0.348, 16.030, -43.853, 45.393, -16.815)
    g_ref_S = RERAM_G_REF_S


# ---------------------------------------------------------------- drift
class DriftLaw(Law):
    """Power-law drift ``G(t) = G_written ((dt + t0_s) / t0_s)^-nu`` for the time dt (s) since
    each device was written, with a per-device exponent ``nu = |mu(x) + sigma(x) xi|`` (xi a
    standard normal drawn once per device).  ``basis`` names the conductance x depends on:
    ``written`` (the device's conductance as written, before drift) or ``target`` (the
    programming target; for pulsed writes the conductance the pulses reached)."""

    kind = "drift"
    basis = "written"
    params = {"t0_s": Param(20.0, "s", "reference time t0", "pos", 0.0, 1e9)}

    def moments(self, g: np.ndarray) -> tuple:
        """(mu, sigma) of the exponent for basis conductances g (S): arrays or floats."""
        return 0.0, 0.0

    def exponent(self, g: np.ndarray, xi: np.ndarray) -> np.ndarray:
        """``nu = |mu(g) + sigma(g) xi|`` per device."""
        mu, sd = self.moments(g)
        return np.abs(mu + sd * xi)

    def factor(self, dt: np.ndarray, nu: np.ndarray) -> np.ndarray:
        """``((dt + t0) / t0)^-nu``: the conductance ratio after dt seconds."""
        t0 = self.t0_s
        return ((dt + t0) / t0) ** (-nu)


@register_law
class PowerDrift(DriftLaw):
    name = "power"
    summary = "`mu = nu_mean`, `sigma = nu_std` for every conductance"
    params = {"nu_mean": Param(0.0, "-", "mean drift exponent nu", "nonneg", 0.0, 1.0),
              "nu_std": Param(0.0, "-", "device-to-device std of nu", "nonneg", 0.0, 1.0),
              **DriftLaw.params}

    def moments(self, g):
        return self.nu_mean, self.nu_std


@register_law
class PCMNandakumarDrift(DriftLaw):
    name = "pcm_nandakumar"
    summary = ("`mu = clip(-0.0155 ln x + 0.0244, 0.049, 0.1)`, `sigma = clip(-0.0125 ln x - "
               "0.0059, 0.008, 0.045)`, `x = G_written / 25 uS` (Nandakumar et al. 2019)")

    def moments(self, g):
        x = np.maximum(g / PCM_G_REF_S, 1e-12)
        mu = np.clip(-0.0155 * np.log(x) + 0.0244, 0.049, 0.1)
        sd = np.clip(-0.0125 * np.log(x) - 0.0059, 0.008, 0.045)
        return mu, sd


@register_law
class PCMJoshiDrift(PCMNandakumarDrift):
    name = "pcm_joshi2020"
    summary = ("as `pcm_nandakumar` with `x = G_target / 25 uS`, the programming target "
               "(Joshi et al., Nat. Commun. 2020)")
    basis = "target"


# ---------------------------------------------------------------- read noise
class ReadNoiseLaw(Law):
    """Conductance fluctuation of a device at read time: ``G_read = G(t) + sigma xi`` with
    :meth:`sigma_S` and xi a standard normal per device, redrawn each time the clock moves
    (the fluctuation is frozen over the reads made at one time, as in the published PCM
    inference model)."""

    kind = "read_noise"

    def sigma_S(self, g_target: np.ndarray, g_now: np.ndarray,
                dt: np.ndarray) -> np.ndarray:
        """Std (S) per device: programming targets g_target (S), drifted conductances g_now
        (S), time since the write dt (s)."""
        return np.zeros_like(g_now)


@register_law
class NoReadNoise(ReadNoiseLaw):
    name = "none"
    summary = "no device read noise"


@register_law
class RelativeReadNoise(ReadNoiseLaw):
    name = "relative"
    summary = "`sigma = std_rel G(t)`"
    params = {"std_rel": Param(REQUIRED, "-", "std relative to the conductance", "nonneg",
                               0.0, 10.0)}

    def sigma_S(self, g_target, g_now, dt):
        return self.std_rel * np.abs(g_now)


@register_law
class PCMJoshiReadNoise(ReadNoiseLaw):
    name = "pcm_joshi2020"
    summary = ("1/f noise: `sigma = G(t) Q_s sqrt(ln((dt + t_read_s) / (2 t_read_s)))`, "
               "`Q_s = min(0.0088 / x^0.65, 0.2)`, `x = G_target / 25 uS`; 0 for dt <= t_read_s "
               "(Joshi et al., Nat. Commun. 2020)")
    params = {"t_read_s": Param(250e-9, "s", "read duration t_read of the 1/f law", "pos",
                                0.0, 1.0)}

    @staticmethod
    def q_s(g_target: np.ndarray) -> np.ndarray:
        """``Q_s = min(0.0088 / x^0.65, 0.2)``, x = g_target / 25 uS (x <= 0: 0.2)."""
        x = np.maximum(np.asarray(g_target, float) / PCM_G_REF_S, 1e-300)
        return np.minimum(0.0088 / x ** 0.65, 0.2)

    def relative_sigma(self, g_target, dt) -> np.ndarray:
        """``Q_s sqrt(ln((dt + t_read) / (2 t_read)))`` (0 where dt <= t_read)."""
        tr = self.t_read_s
        arg = np.log((np.asarray(dt, float) + tr) / (2.0 * tr))
        return self.q_s(g_target) * np.sqrt(np.maximum(arg, 0.0))

    def sigma_S(self, g_target, g_now, dt):
        return np.abs(g_now) * self.relative_sigma(g_target, dt)


# ---------------------------------------------------------------- card sections
def law_class(kind: str, name: str):
    """The law class registered as ``name`` for ``kind`` (KeyError names the known ones)."""
    try:
        return LAWS[kind][name]
    except KeyError:
        raise KeyError(f"unknown {kind} law {name!r}; registered: "
                       f"{', '.join(LAWS[kind])}") from None


def section_law_name(kind: str, sec: dict) -> str:
    """The law a card section names: ``law`` (or ``model`` for programming noise; drift's
    older ``nu_model``); an absent name is ``none`` (drift: ``power``, or none for an empty
    section)."""
    if kind == "programming_noise":
        return sec.get("law", sec.get("model", "none"))
    if kind == "drift":
        if not sec:
            return "none"
        return sec.get("law", sec.get("nu_model", "power"))
    return sec.get("law", "none") if sec else "none"


NAME_KEYS = {"programming_noise": ("law", "model"), "drift": ("law", "nu_model"),
             "read_noise": ("law",)}


def make_law(kind: str, sec: dict | None):
    """The law object a validated card section describes (None: the section is absent or
    names no law, e.g. a card without drift)."""
    sec = sec or {}
    name = section_law_name(kind, sec)
    if name == "none" and kind == "drift":
        return None
    cls = law_class(kind, name)
    return cls(**{k: v for k, v in sec.items() if k in cls.params})


def validate_section(kind: str, raw, where: Where) -> dict:
    """Check one card section (mapping of the law's name key and its parameters) and return
    it with numbers as floats; errors name the file, the key and the fix."""
    if not raw:
        return {}
    if not isinstance(raw, dict):
        raise where.fail("expected a mapping")
    sec = dict(raw)
    names = [k for k in NAME_KEYS[kind] if k in sec]
    if len(names) > 1:
        raise where.child(names[1]).fail(f"give the law once, as {names[0]}")
    name = section_law_name(kind, sec)
    known = LAWS[kind]
    if not isinstance(name, str) or name not in known:
        close = difflib.get_close_matches(str(name), list(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise where.child(names[0] if names else "law").fail(
            f"unknown {kind} law {name!r}; use one of {', '.join(known)}{hint}")
    cls = known[name]
    for k in list(sec):
        if k in NAME_KEYS[kind]:
            continue
        if kind == "drift" and "nu_model" in sec and k in ("nu_mean", "nu_std"):
            sec[k] = _number(sec[k], where.child(k),             # the older spelling
                             PowerDrift.params[k])               # allowed (and ignored) them
            continue
        if k not in cls.params:
            used = ", ".join(cls.params) or "none"
            raise where.child(str(k)).fail(f"not a parameter of the {kind} law {name} "
                                           f"(it uses: {used})")
    for k, p in cls.params.items():
        if k not in sec:
            if p.default is REQUIRED:
                raise where.child(k).fail(f"missing for the {kind} law {name}")
            continue
        sec[k] = _number(sec[k], where.child(k), p)
    return sec


def _number(v, w: Where, p: Param) -> float:
    """A card number of parameter ``p``: finite, of its kind, inside its physical range."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise w.fail(f"expected a finite number, got {v!r}")
    if p.kind in ("nonneg", "pos") and v < 0:
        raise w.fail(f"must not be negative, got {v}")
    if p.kind == "pos" and v == 0:
        raise w.fail("must be > 0")
    if not p.lo <= v <= p.hi:
        u = "" if p.unit in ("", "-") else f" {p.unit}"
        raise w.fail(f"{v:g}{u} is outside the physical range {p.lo:g} to {p.hi:g}{u}; check "
                     f"the value and its unit (docs/devices.md lists every range)")
    return float(v)


def section_keys(kind: str) -> dict:
    """Every key a section of ``kind`` may hold -> its meaning (for card errors and docs)."""
    out = {NAME_KEYS[kind][0]: f"the law: {' | '.join(LAWS[kind])}"}
    for extra in NAME_KEYS[kind][1:]:
        out[extra] = f"older spelling of {NAME_KEYS[kind][0]}"
    users: dict = {}
    for name, cls in LAWS[kind].items():
        for k, p in cls.params.items():
            users.setdefault(k, (p, []))[1].append(name)
    for k, (p, names) in users.items():
        out[k] = f"{p.doc} ({p.unit}; law{'s' if len(names) > 1 else ''} {', '.join(names)})"
    return out

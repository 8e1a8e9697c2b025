"""The Numba pulse kernels, generic over the device model.

Each model's plain-Python ``step`` is compiled once with :func:`jit_step` to a function of the
fixed signature :data:`STEP_SIG`, which the generic kernels take as a first-class function
argument: one kernel serves every model and both are cached on disk (``cache=True``), so a new
process pays no compilation (a kernel specialised per model by a closure inlines the step but
cannot be cached: about 2 s of compilation per model per process).

:func:`pulse_devices` (what :class:`~crossbar_ep.devices.DeviceArray` runs) visits only the
devices with a nonzero count (:func:`pulse_counts_flat`: their indices and counts, in one pass,
shared by the two sides of a differential pair, each taking the counts with its own sign).
The steps of the shipped models (:data:`INLINED_STEPS`) each have their own cached kernel with
the step inlined, built from one loop (an ``inline="always"`` function whose step argument
resolves at compile time; compiled on first use); any other model's step is called through
the first-class argument of one more kernel.  Both apply the same pulses with the same noise
as :func:`pulse_kernel`, the plain loop over every device kept as the reference: the states
are bit-identical (``tests/test_pulse_devices.py``).  Numba keys a kernel's disk cache on
its own source file; an edit of a shipped step in ``models.py`` still reaches these kernels
because importing the package drops every cached kernel when a Numba source changed
(:mod:`crossbar_ep.numba_cache`).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types

from crossbar_ep import fastrng
from crossbar_ep.devices.models import ConstantStep, ExpStep, LinearStep, Piecewise, PowStep, \
    SoftBoundsPmax

_f8, _i8 = types.float64, types.int64
_row = types.Array(_f8, 1, "C")
STEP_SIG = types.UniTuple(_f8, 2)(_f8, _i8, _f8, _f8, _row, _row)   # (w, d, wmin, wmax, p, c)
STEP_TYPE = types.FunctionType(STEP_SIG)
_JIT: dict = {}

# the shipped models whose step pulse_devices inlines, in the order of their step_id
INLINED_STEPS = (ConstantStep, LinearStep, SoftBoundsPmax, ExpStep, PowStep, Piecewise)
_s0, _s1, _s2, _s3, _s4, _s5 = (numba.njit(cache=True)(m.step) for m in INLINED_STEPS)


def jit_step(py_step):
    """The Numba-compiled version of a model's plain-Python step (compiled once per
    function and process; cached on disk where Numba can)."""
    fn = _JIT.get(py_step)
    if fn is None:
        fn = _JIT[py_step] = numba.njit(STEP_SIG, cache=True)(py_step)
    return fn


def step_id(py_step, n_params: int) -> int:
    """Index of ``py_step`` in :data:`INLINED_STEPS` (a subclass that keeps a shipped step
    shares its index), or -1 (another step, or fewer than two per-device parameters):
    :func:`pulse_devices` calls it as a first-class function."""
    if n_params >= 2:
        for k, m in enumerate(INLINED_STEPS):
            if py_step is m.step:
                return k
    return -1


@numba.njit(_i8(_i8[::1], _i8[::1], _i8[::1]), cache=True)
def nonzero_index(n, idx, counts):
    """Write the flat indices i with ``n[i] != 0`` to the start of ``idx`` and their counts
    to the start of ``counts`` (both the size of n), in increasing order of i; returns how
    many (branch-free: about 1 ns per device)."""
    m = 0
    for i in range(n.size):
        idx[m] = i
        counts[m] = n[i]
        m += n[i] != 0
    return m


@numba.njit(inline="always")
def _tuple_params(P, i):
    """Device i's first four parameters as a tuple (zero-padded): what an inlined shipped
    step reads (at most p[3]); a row view per device would cost two reference-count
    updates."""
    if P.shape[1] >= 4:
        return (P[i, 0], P[i, 1], P[i, 2], P[i, 3])
    return (P[i, 0], P[i, 1], 0.0, 0.0)


@numba.njit(inline="always")
def _row_params(P, i):
    """Device i's row of P (what a first-class step takes)."""
    return P[i]


@numba.njit(inline="always")
def _pulse_loop(step, params, w, counts, sign, idx, wmin, wmax, P, c, stuck, std, seed):
    """The loop of :func:`pulse_devices`, inlined into one kernel per step (``step`` and
    ``params`` resolve at compile time)."""
    total = 0
    for j in range(idx.size):
        i = idx[j]
        if stuck[i] != 0:
            continue
        k = sign * counts[j]
        d = 1 if k > 0 else -1
        m = abs(k)
        total += m
        wi = w[i]
        lo = wmin[i]
        hi = wmax[i]
        key = fastrng.key(seed + i)
        p = params(P, i)
        for q in range(m):
            s, add = step(wi, d, lo, hi, p, c)
            if add > 0.0:
                wi += s + add * fastrng.normal(key, q)
            elif std > 0.0:
                wi += s * (1.0 + std * fastrng.normal(key, q))
            else:
                wi += s
            if wi > hi:
                wi = hi
            elif wi < lo:
                wi = lo
        w[i] = wi
    return total


# one cached kernel per inlined step (lazily compiled on first use; a closure over the step
# would not be cacheable) and the generic one taking the step as a first-class function
@numba.njit(cache=True)
def _pulse_0(w, counts, sign, idx, wmin, wmax, P, c, stuck, std, seed):
    return _pulse_loop(_s0, _tuple_params, w, counts, sign, idx, wmin, wmax, P, c, stuck, std,
                       seed)


@numba.njit(cache=True)
def _pulse_1(w, counts, sign, idx, wmin, wmax, P, c, stuck, std, seed):
    return _pulse_loop(_s1, _tuple_params, w, counts, sign, idx, wmin, wmax, P, c, stuck, std,
                       seed)


@numba.njit(cache=True)
def _pulse_2(w, counts, sign, idx, wmin, wmax, P, c, stuck, std, seed):
    return _pulse_loop(_s2, _tuple_params, w, counts, sign, idx, wmin, wmax, P, c, stuck, std,
                       seed)


@numba.njit(cache=True)
def _pulse_3(w, counts, sign, idx, wmin, wmax, P, c, stuck, std, seed):
    return _pulse_loop(_s3, _tuple_params, w, counts, sign, idx, wmin, wmax, P, c, stuck, std,
                       seed)


@numba.njit(cache=True)
def _pulse_4(w, counts, sign, idx, wmin, wmax, P, c, stuck, std, seed):
    return _pulse_loop(_s4, _tuple_params, w, counts, sign, idx, wmin, wmax, P, c, stuck, std,
                       seed)


@numba.njit(cache=True)
def _pulse_5(w, counts, sign, idx, wmin, wmax, P, c, stuck, std, seed):
    return _pulse_loop(_s5, _tuple_params, w, counts, sign, idx, wmin, wmax, P, c, stuck, std,
                       seed)


@numba.njit(_i8(STEP_TYPE, _f8[::1], _i8[::1], _i8, _i8[::1], _f8[::1], _f8[::1], _f8[:, ::1],
                _f8[::1], types.int8[::1], _f8, _i8), cache=True)
def _pulse_any(step, w, counts, sign, idx, wmin, wmax, P, c, stuck, std, seed):
    return _pulse_loop(step, _row_params, w, counts, sign, idx, wmin, wmax, P, c, stuck, std,
                       seed)


_INLINED_KERNELS = (_pulse_0, _pulse_1, _pulse_2, _pulse_3, _pulse_4, _pulse_5)


def pulse_devices(model: int, step, w, counts, sign: int, idx, wmin, wmax, P, c, stuck,
                  std: float, seed: int) -> int:
    """Apply ``sign * counts[j]`` signed pulses to device ``idx[j]``, one by one, for each j
    (:func:`pulse_counts_flat`: the devices with a nonzero count in increasing order and
    their counts, int64); returns the number of pulses applied.  ``model``: the
    :func:`step_id` of the model's step (its own kernel with the step inlined), -1 to call
    ``step`` (from :func:`jit_step`, first-class).  Other arrays as :func:`pulse_kernel`
    (flat, C-contiguous, float64 but ``stuck`` int8), which this matches bit for bit."""
    if model >= 0:
        return _INLINED_KERNELS[model](w, counts, sign, idx, wmin, wmax, P, c, stuck, std, seed)
    return _pulse_any(step, w, counts, sign, idx, wmin, wmax, P, c, stuck, std, seed)


@numba.njit(_i8(STEP_TYPE, _f8[::1], _i8[::1], _f8[::1], _f8[::1], _f8[:, ::1], _f8[::1],
                types.int8[::1], _f8, _i8), cache=True)
def pulse_kernel(step, w, n, wmin, wmax, P, c, stuck, std, seed):
    """Apply ``n[i]`` signed pulses to device i, one by one, through ``step`` (flat arrays;
    ``P`` (devices, k) the per-device parameters, ``c`` the card constants); returns the
    number of pulses applied.  Cycle-to-cycle noise: additive with the std the step returns,
    else multiplicative ``(1 + std xi)``; xi from the counter-based generator
    (:mod:`crossbar_ep.fastrng`) keyed by ``seed`` and the device.  States are clipped to
    each device's [wmin, wmax] after every pulse.  The reference loop over every device
    (:func:`pulse_devices` is the fast path)."""
    total = 0
    for i in range(w.size):
        k = n[i]
        if k == 0 or stuck[i] != 0:
            continue
        d = 1 if k > 0 else -1
        m = abs(k)
        total += m
        wi = w[i]
        key = fastrng.key(seed + i)
        p = P[i]
        for q in range(m):
            s, add = step(wi, d, wmin[i], wmax[i], p, c)
            if add > 0.0:
                wi += s + add * fastrng.normal(key, q)
            elif std > 0.0:
                wi += s * (1.0 + std * fastrng.normal(key, q))
            else:
                wi += s
            if wi > wmax[i]:
                wi = wmax[i]
            elif wi < wmin[i]:
                wi = wmin[i]
        w[i] = wi
    return total


def reference_pulse(dev, n_pulses) -> int:
    """:meth:`DeviceArray.pulse <crossbar_ep.devices.DeviceArray.pulse>` of ``dev`` by the
    reference loop over every device (:func:`pulse_kernel`; same generator draws, the write
    noise after): for tests and ``benchmarks/bench_stochastic_update.py --reference``."""
    n = np.ascontiguousarray(n_pulses, dtype=np.int64).reshape(-1)
    total = pulse_kernel(jit_step(dev.model.step), dev.w, n, dev.wmin, dev.wmax, dev._P,
                         dev._c, dev.stuck, float(dev.std), int(dev.rng.integers(0, 2**62)))
    dev._redraw_write_noise()
    dev.touch()
    return int(total)


def pulse_counts_flat(n_pulses) -> tuple:
    """(flat indices of the nonzero counts of ``n_pulses``, those counts), both int64 in
    increasing order of the index: the operands :func:`pulse_devices` takes."""
    n = np.ascontiguousarray(n_pulses, dtype=np.int64).reshape(-1)
    idx = np.empty(n.size, np.int64)
    counts = np.empty(n.size, np.int64)
    m = nonzero_index(n, idx, counts)
    return idx[:m], counts[:m]


@numba.njit(cache=True, error_model="numpy")
def state_conductance(w, noise, stuck, lo, hi, w0, w_span, g0, g_span):
    """Conductances (S, flat) of pulsed devices in one pass: readable state ``s = w + noise``
    (``noise`` of size 0: none), stuck devices at their bound (1: ``lo``, 2: ``hi``), then
    ``g = g0 + (s - w0) / w_span * g_span`` clipped at 0 S (NumPy's maximum: NaN kept) -- the
    bits of the card's ``w_to_g`` and ``np.maximum(g, 0)``.  The stuck devices (rare) are
    redone in a second pass, so the first vectorises and reads no bounds."""
    out = np.empty(w.size)
    has_noise = noise.size > 0
    for i in range(w.size):
        s = w[i] + noise[i] if has_noise else w[i]
        g = g0 + (s - w0) / w_span * g_span
        out[i] = g if (g >= 0.0 or np.isnan(g)) else 0.0
    for i in range(w.size):
        if stuck[i] != 0:
            g = g0 + ((lo[i] if stuck[i] == 1 else hi[i]) - w0) / w_span * g_span
            out[i] = g if (g >= 0.0 or np.isnan(g)) else 0.0
    return out


@numba.njit(cache=True)
def count_at_bound(w, wmin, wmax, stuck, tol):
    """Devices stuck or within ``tol`` of their range from a bound."""
    count = 0
    for i in range(w.size):
        eps = tol * (wmax[i] - wmin[i])
        if stuck[i] != 0 or w[i] - wmin[i] <= eps or wmax[i] - w[i] <= eps:
            count += 1
    return count

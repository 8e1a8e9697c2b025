"""The Numba pulse kernel, generic over the device model.

Each model's plain-Python ``step`` is compiled once with :func:`jit_step` to a function of the
fixed signature :data:`STEP_SIG` and passed to :func:`pulse_kernel` as a first-class function
argument: one kernel serves every model and both are cached on disk (``cache=True``), so a new
process pays no compilation (a kernel specialised per model by a closure inlines the step but
cannot be cached: about 2 s of compilation per model per process).
"""

from __future__ import annotations

import numba
from numba import types

from crossbar_ep import fastrng

_f8, _i8 = types.float64, types.int64
_row = types.Array(_f8, 1, "C")
STEP_SIG = types.UniTuple(_f8, 2)(_f8, _i8, _f8, _f8, _row, _row)   # (w, d, wmin, wmax, p, c)
STEP_TYPE = types.FunctionType(STEP_SIG)
_JIT: dict = {}


def jit_step(py_step):
    """The Numba-compiled version of a model's plain-Python step (compiled once per
    function and process; cached on disk where Numba can)."""
    fn = _JIT.get(py_step)
    if fn is None:
        fn = _JIT[py_step] = numba.njit(STEP_SIG, cache=True)(py_step)
    return fn


@numba.njit(_i8(STEP_TYPE, _f8[::1], _i8[::1], _f8[::1], _f8[::1], _f8[:, ::1], _f8[::1],
                types.int8[::1], _f8, _i8), cache=True)
def pulse_kernel(step, w, n, wmin, wmax, P, c, stuck, std, seed):
    """Apply ``n[i]`` signed pulses to device i, one by one, through ``step`` (flat arrays;
    ``P`` (devices, k) the per-device parameters, ``c`` the card constants); returns the
    number of pulses applied.  Cycle-to-cycle noise: additive with the std the step returns,
    else multiplicative ``(1 + std xi)``; xi from the counter-based generator
    (:mod:`crossbar_ep.fastrng`) keyed by ``seed`` and the device.  States are clipped to
    each device's [wmin, wmax] after every pulse."""
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


@numba.njit(cache=True)
def count_at_bound(w, wmin, wmax, stuck, tol):
    """Devices stuck or within ``tol`` of their range from a bound."""
    count = 0
    for i in range(w.size):
        eps = tol * (wmax[i] - wmin[i])
        if stuck[i] != 0 or w[i] - wmin[i] <= eps or wmax[i] - w[i] <= eps:
            count += 1
    return count

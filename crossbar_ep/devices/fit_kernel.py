"""Numba kernels of the device fit: noiseless pulse trains and single steps of one device
through a model's compiled ``step`` (:func:`crossbar_ep.devices.kernel.jit_step`), the same
function the pulse kernel of the device arrays runs.

Both take the step as a first-class function of the fixed signature
:data:`~crossbar_ep.devices.kernel.STEP_SIG`, so one compiled kernel serves every model and is
cached on disk.
"""

from __future__ import annotations

import numba
from numba import types

from crossbar_ep.devices.kernel import STEP_TYPE

_f8, _i8 = types.float64, types.int64


@numba.njit(types.void(STEP_TYPE, _f8[::1], _i8[::1], _i8[::1], _f8, _f8, _f8[::1], _f8[::1],
                       _f8[:, ::1]), cache=True)
def train_kernel(step, w0, d, n, wmin, wmax, p, c, out):
    """Row i: ``n[i]`` pulses of sign ``d[i]`` from state ``w0[i]`` of one device with bounds
    ``wmin``, ``wmax`` and parameters ``p``; ``out[i, q]`` is the state after pulse q + 1 (no
    noise; clipped to the bounds after every pulse, as the pulse kernel does)."""
    for i in range(w0.size):
        w = w0[i]
        for q in range(n[i]):
            s, _add = step(w, d[i], wmin, wmax, p, c)
            w += s
            if w > wmax:
                w = wmax
            elif w < wmin:
                w = wmin
            out[i, q] = w


@numba.njit(types.void(STEP_TYPE, _f8[::1], _i8[::1], _f8, _f8, _f8[::1], _f8[::1], _f8[::1],
                       _f8[::1]), cache=True)
def step_kernel(step, w, d, wmin, wmax, p, c, s_out, add_out):
    """The step of one pulse of sign ``d[i]`` at each state ``w[i]`` of one device: the state
    change (``s_out``) and the std of additive noise the step returns (``add_out``)."""
    for i in range(w.size):
        s, add = step(w[i], d[i], wmin, wmax, p, c)
        s_out[i] = s
        add_out[i] = add


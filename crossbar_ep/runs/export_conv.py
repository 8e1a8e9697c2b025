"""The signal one analog read of a conv net's array sees, for netlist export: a forward read
of a kernel array is one patch (the input image's for C1, the free-phase pooled map's of the
layer below otherwise), a transposed read is rho of the free state at one output position;
Wf reads the flattened last pooled map, a head ``A<k>`` that of layer k.  The position is the centre of the output map."""

from __future__ import annotations

import numpy as np

from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.model.conv import im2col, to_maps


def conv_signal(run, name: str, x: np.ndarray, transposed: bool) -> tuple[np.ndarray, str]:
    """(signal vector, where it comes from) for one sample x (1, n_in)."""
    net = run.net
    free = run.learner.settler.free(x)
    if name == "Wf" or name.startswith("A"):     # the readout, or a head on layer A<k>
        if transposed:
            raise CrossbarEPError(f"{name}: a readout's transposed read carries the nudge, "
                                  f"not a state; export its forward read")
        k = len(net.convs) if name == "Wf" else int(name[1:])
        return free.e[k][0], f"flattened pooled map of conv layer {k}"
    k = int(name[1:])
    op = net.convs[k - 1]
    g = op.g
    oy, ox = g.h_out // 2, g.w_out // 2
    where = f"output position ({oy}, {ox}) of {g.h_out} x {g.w_out}"
    if transposed:
        if k == 1:
            raise CrossbarEPError("C1: the first conv layer is never read transposed (no "
                                  "feedback into the input); export its forward read")
        return free.s[k][0].reshape(g.h_out, g.w_out, g.c_out)[oy, ox], f"rho(x_{k}) at {where}"
    prev = net.convs[k - 2].g.pooled if k > 1 else None
    src = to_maps(x, net.in_shape) if k == 1 else free.e[k - 1].reshape(-1, *prev)
    cols = im2col(src, g.k, g.pad)
    return cols[oy * g.w_out + ox], f"input patch at {where}"


def is_conv(run) -> bool:
    return bool(getattr(run.net, "convs", None))

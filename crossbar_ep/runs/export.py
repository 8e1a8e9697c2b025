"""Export one tile of a trained run as an ngspice netlist, with a real input sample.

The tile's devices become resistors at their current conductances (G+ and G- columns of each
differential pair side by side: physical column 2j is output j's G+, 2j + 1 its G-), the drive
voltages come from the sample's signal entering that matrix (the image for W0, the settled
free-phase state of the source layer otherwise) through the DAC, ``x v_read / input_range``.
The simulator's differential currents for the same read are written into the netlist header
and returned, so ngspice's ``i(vsense_2j) - i(vsense_2j+1)`` can be checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar_ep.circuit.nodal import TileCircuit, Wires
from crossbar_ep.circuit.spice import tile_netlist
from crossbar_ep.errors import CrossbarEPError


@dataclass
class TileExport:
    netlist: str
    G: np.ndarray              # (rows, 2 * outputs) conductances (S), physical layout
    V: np.ndarray              # drive voltages (V)
    expected_A: np.ndarray     # simulator's differential currents per output line (A)
    matrix: str
    tile: tuple


def matrix_name(layer: str) -> str:
    """'1' -> 'W1', 'f' -> 'Wf'; names pass through."""
    return f"W{layer}" if layer.isdigit() or layer == "f" else layer


def export_tile(run_dir: str, layer: str, tile_i: int, tile_j: int, sample: int,
                split: str = "test", transposed: bool = False,
                wires: Wires | None = None) -> TileExport:
    """``wires``: None takes the run's crossbar.wires."""
    from crossbar_ep.config.build import wires_of
    from crossbar_ep.runs import train
    run = train.resume(run_dir, record=False)
    if wires is None:
        wires = wires_of(run.cfg).wires
    pulses = run.learner.pulses
    if pulses is None:
        raise CrossbarEPError(f"{run_dir}: not a crossbar run (crossbar.enabled is false)")
    name = matrix_name(layer)
    cb = pulses.crossbars.get(name)
    if cb is None:
        raise CrossbarEPError(f"{run_dir}: no crossbar matrix {name!r} (has "
                              f"{', '.join(pulses.crossbars)})")
    if not cb.differential:
        raise CrossbarEPError(f"{name}: export needs the differential mapping "
                              f"(crossbar.signed: differential)")
    if not (0 <= tile_i < len(cb.row_tiles) and 0 <= tile_j < len(cb.col_tiles)):
        raise CrossbarEPError(f"{name}: tile ({tile_i}, {tile_j}) out of range: "
                              f"{len(cb.row_tiles)} x {len(cb.col_tiles)} tiles")
    x_all = run.data.x_test if split == "test" else run.data.x_train
    y_all = run.data.y_test if split == "test" else run.data.y_train
    if not 0 <= sample < x_all.shape[0]:
        raise CrossbarEPError(f"--input {sample}: the {split} set has {x_all.shape[0]} samples")
    x = x_all[sample:sample + 1]
    # the signal entering this matrix: forward reads see the source layer's state, transposed
    # reads the destination layer's state (the image itself for W0)
    proj = next(p for p in run.net.projections if p.name == name)
    from crossbar_ep.runs.export_conv import conv_signal, is_conv
    if is_conv(run):
        signal, _ = conv_signal(run, name, x, transposed)
    elif transposed:
        if proj.dst > run.net.L:
            raise CrossbarEPError(f"{name}: the readout's transposed read carries the nudge, "
                                  f"not a state; export its forward read")
        signal = run.learner.settler.free(x).s[proj.dst][0]
    else:
        signal = run.learner.settler.free(x).s[proj.src][0]
    rt, ct = cb.row_tiles[tile_i], cb.col_tiles[tile_j]
    per = cb.per
    levels = 2 ** (per.dac_bits - 1) - 1 if per.dac_bits is not None else None
    peak = float(np.abs(signal).max())
    if per.input_scaling == "abs_max" and peak > 0.0:   # the vector the DAC actually drives
        signal = signal * (per.input_range / peak)
    sig = np.clip(signal, -per.input_range, per.input_range)
    if levels is not None:
        step = per.input_range / levels
        sig = np.rint(sig / step) * step
    gp, gn = cb.conductances()
    G = np.empty((rt.stop - rt.start, 2 * (ct.stop - ct.start)))   # rows x physical columns
    G[:, 0::2] = gp[ct, rt].T
    G[:, 1::2] = gn[ct, rt].T
    scale_v = per.v_read_V / per.input_range
    W = np.asarray(cb.W_eff, float)
    drive = cb.iv.f(sig * scale_v) / scale_v            # the device law at the drive voltage
    if transposed:   # pairs driven with +V on G+ and -V on G-
        v_out = sig[ct] * scale_v
        V = np.empty(2 * v_out.size)
        V[0::2], V[1::2] = v_out, -v_out
        part = drive[ct] @ W[ct, rt]
    else:
        V = sig[rt] * scale_v
        part = drive[rt] @ W[ct, rt].T
    expected = part * cb.current_factor()
    if cb.has_wires and wires == cb.wires.wires:   # the operands training used (exact solve)
        op = cb.read_operand((tile_i, tile_j), transposed)
        expected = (drive[ct] if transposed else drive[rt]) @ np.asarray(op, float) \
            * cb.current_factor()
    elif not wires.ideal:
        c = TileCircuit(G, wires, transposed)
        I = c.sensed_currents(V) if cb.iv.linear else c.nonlinear_sensed_currents(V, cb.iv)
        expected = I if transposed else I[0::2] - I[1::2]
    label = int(y_all[sample])
    comments = [f"run {run_dir}, epoch {run.epochs_done}, matrix {name}, tile ({tile_i}, "
                f"{tile_j}) = inputs {rt.start}..{rt.stop - 1} x outputs {ct.start}.."
                f"{ct.stop - 1}",
                f"input: {split} sample {sample} (label {label}); v_read {per.v_read_V} V at "
                f"input {per.input_range}; DAC {per.dac_bits} bits",
                f"device card {cb.card.name}; physical column 2j = output j G+, 2j+1 = G-",
                "simulator differential currents (A), output line order: "
                + " ".join(f"{v:.9e}" for v in expected)]
    if not cb.iv.linear:
        comments.append(f"devices: I = G f(V), {cb.iv.law} law (behavioural B sources)")
    if not wires.ideal:
        comments.append(f"wires: row {wires.r_row:g} ohm, column {wires.r_col:g} ohm per "
                        f"segment; driver {wires.r_driver:g} ohm, sense {wires.r_sense:g} ohm")
    net = tile_netlist(G, wires, V, transposed, title=f"crossbar-ep export: {name} tile "
                       f"({tile_i}, {tile_j})", comments=comments, iv=cb.iv)
    return TileExport(net, G, V, expected, name, (tile_i, tile_j))

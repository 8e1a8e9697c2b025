"""Speed of the tile effective matrices against ngspice, measured in one run.

For square tiles with wire resistance (default 128 x 128 and 256 x 256; 2.5 ohm wires, 100 ohm
drivers and sense amplifiers, conductances in the Li-ECRAM range) it times

- the effective matrix M and source admittance Y (all m input responses) by the transfer
  solver (:func:`crossbar_ep.circuit.nodal.transfer_maps`) and by sparse LU (:class:`TileCircuit`);
- ngspice solving the same tile's exported netlist for ONE input vector (``ngspice -b``,
  parse included),

checks that ``M V`` agrees with ngspice's currents, and prints the speed ratio ngspice (one
input) / transfer solver (all inputs).  Getting all m responses from ngspice would cost m times
its single solve; that ratio is printed too.

    python benchmarks/bench_nodal.py [--sizes 128 256] [--ngspice-max 128]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from crossbar_ep.circuit.nodal import TileCircuit, Wires, transfer_maps  # noqa: E402
from crossbar_ep.circuit.spice import (  # noqa: E402
    ngspice_available,
    run_ngspice,
    sensed_currents,
    tile_netlist,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--ngspice-max", type=int, default=128,
                    help="largest size also solved by ngspice (its time grows ~N^2.4)")
    ap.add_argument("--no-sparse", action="store_true", help="skip the sparse-LU timing")
    args = ap.parse_args()
    w = Wires(2.5, 2.5, 100.0, 100.0)
    rng = np.random.default_rng(0)
    transfer_maps(rng.uniform(1e-7, 2.5e-5, (8, 8)), w)          # compile the Numba kernel
    print(f"wires: row/column {w.r_row} ohm per segment, driver {w.r_driver} ohm, sense "
          f"{w.r_sense} ohm; G uniform in [0.1, 25] uS")
    for n in args.sizes:
        G = rng.uniform(1e-7, 2.5e-5, (n, n))
        V = rng.uniform(-0.2, 0.2, n)
        t = time.perf_counter()
        M, _ = transfer_maps(G, w)
        t_tr = time.perf_counter() - t
        line = f"{n} x {n}: transfer solver M and Y {t_tr:.3f} s"
        if not args.no_sparse:
            t = time.perf_counter()
            Ms, _ = TileCircuit(G, w).effective_maps()
            t_sp = time.perf_counter() - t
            dev = np.abs(Ms - M).max() / np.abs(Ms).max()
            line += f"; sparse LU {t_sp:.3f} s (transfer {t_sp / t_tr:.1f}x faster, " \
                    f"agree to {dev:.1e})"
        print(line)
        if n <= args.ngspice_max and ngspice_available():
            net = tile_netlist(G, w, V)
            t = time.perf_counter()
            ref = sensed_currents(run_ngspice(net, timeout=3600), n)
            t_ng = time.perf_counter() - t
            err = np.abs(M @ V - ref).max() / np.abs(ref).max()
            print(f"    ngspice, one input: {t_ng:.2f} s; max relative difference of M V from "
                  f"ngspice {err:.1e}")
            print(f"    speed ratio ngspice (1 input) / effective matrix ({n} inputs): "
                  f"{t_ng / t_tr:.0f}x;  per input: {n * t_ng / t_tr:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

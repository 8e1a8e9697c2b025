"""Array read energy per read at a fixed drive versus wire resistance (docs/circuit.md, the
accuracy-versus-wire-resistance table): what the wires alone do to the read energy.

Programs one 512 x 512 matrix (W1 of the 3HL-512 net: 2 x 2 logical tiles of 256 x 256, i.e.
256 x 512 physical arrays) on the Li-ECRAM card with the initial weights' statistics of
experiments/mnist_3hl_crossbar.yaml (7-bit DAC, v_read 0.2 V, t_read 10 ns), and reads it with
one fixed drive (a state vector uniform on [-1, 1], seed 0) forward and transposed at each
wire setting of experiments/sweeps/wire_resistance.yaml (driver = sense = 10 wire segments).
Prints per read and sample: the forward energy, the transposed energy from the exact
transposed admittance and the reciprocity shortcut's (ideal-wire column sums), in pJ, and the
ratios to ideal wires.

    python benchmarks/energy_vs_wires.py [--n 512] [--tile 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from crossbar_ep.circuit.ir_drop import WireSettings  # noqa: E402
from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery  # noqa: E402
from crossbar_ep.devices.card import load_card  # noqa: E402

SETTINGS = [(0.0, 0.0), (0.003, 0.03), (0.03, 0.3), (0.1, 1.0), (0.3, 3.0), (1.0, 10.0)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="matrix size (n x n)")
    ap.add_argument("--tile", type=int, default=256, help="logical tile size")
    args = ap.parse_args()
    card = load_card(os.path.join(os.path.dirname(HERE), "device_models",
                                  "ecram_li_tang2018.yaml"))
    rng = np.random.default_rng(0)
    n = args.n
    W = rng.uniform(-1, 1, (n, n)) / np.sqrt(n)              # the nets' uniform init scale
    x = rng.uniform(-1, 1, (1, n))
    per = Periphery(dac_bits=7, adc_bits=9, read_noise=0.01)
    print(f"{n} x {n} matrix on {args.tile} x {args.tile} logical tiles, Li-ECRAM, drive "
          f"uniform on [-1, 1] (one sample), v_read {per.v_read_V} V, t_read {per.t_read_s} s")
    print("| wire (ohm) | driver = sense (ohm) | forward pJ | vs ideal | transposed pJ, exact "
          "| vs ideal | transposed pJ, former shortcut | solve s |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for r, rt in SETTINGS:
        t = time.perf_counter()
        wires = WireSettings(r, r, rt, rt)
        cb = CrossbarMatrix(W, card, np.random.default_rng(1), per, "differential",
                            args.tile, args.tile, 2.0, np.float64, wires)
        ef = cb.read_energy(x)[0] * 1e12
        et = cb.read_energy(x, transposed=True)[0] * 1e12
        ideal = CrossbarMatrix(W, card, np.random.default_rng(1), per, "differential",
                               args.tile, args.tile, 2.0, np.float64)
        short = ideal.read_energy(x, transposed=True)[0] * 1e12   # ideal-wire column sums
        if base is None:
            base = (ef, et)
        print(f"| {r:g} | {rt:g} | {ef:.2f} | {ef / base[0]:.3f} | {et:.2f} | "
              f"{et / base[1]:.3f} | {short:.2f} | {time.perf_counter() - t:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

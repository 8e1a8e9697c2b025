"""Energy accounting of the crossbar reads, converters and programming pulses.

- array read energy: for every read, ``t_read * V^T Y V`` per sample and tile, with the DAC's
  drive voltages V (V) and the tile's source admittance Y (S): ``Y = diag(sum_j G_ij)`` with
  ideal wires (each driven line sees its devices to virtual ground), the exact nodal
  admittance with wire resistance (:meth:`crossbar_ep.circuit.nodal.TileCircuit.effective_maps`);
- converters: ``e_dac_J`` per driven line per sample and tile row, ``e_adc_J`` per sensed
  output per sample and tile;
- programming: ``V_write^2 G t_pulse`` per pulse, with the card's write voltage and pulse width
  and the device's conductance before the pulse.

One read is one evaluation of a layer's input by the settling loop (every step of the discrete
map or of Euler, two per Heun step), plus the input drive once per batch and every readout.
Energies are reported per training sample and epoch, in joules.
"""

from __future__ import annotations

from dataclasses import dataclass

ENERGY_METRICS = {
    "energy_array_J": "array read energy per training sample (devices and wires)",
    "energy_dac_J": "DAC conversion energy per training sample",
    "energy_adc_J": "ADC conversion energy per training sample",
    "energy_program_J": "programming-pulse energy per training sample",
    "energy_total_J": "sum of the four per training sample",
}


@dataclass
class EnergyMeter:
    """Running sums since the last :meth:`take`."""

    array_J: float = 0.0
    dac_conversions: int = 0
    adc_conversions: int = 0

    def add_read(self, cb, v, transposed: bool = False) -> None:
        E, dac, adc = cb.read_energy(v, transposed)
        self.array_J += E
        self.dac_conversions += dac
        self.adc_conversions += adc

    def on_read(self, op, v, transposed: bool) -> None:
        """Observer hook: every read of a crossbar operator it is subscribed to."""
        self.add_read(op, v, transposed)

    def take(self, samples: int, e_dac_J: float, e_adc_J: float,
             program_J: float) -> dict:
        """Per-sample metrics (J) since the last call; resets the sums."""
        n = max(1, samples)
        row = {"energy_array_J": self.array_J / n,
               "energy_dac_J": self.dac_conversions * e_dac_J / n,
               "energy_adc_J": self.adc_conversions * e_adc_J / n,
               "energy_program_J": program_J / n}
        row["energy_total_J"] = sum(row.values())
        self.reset()
        return row

    def reset(self) -> None:
        self.array_J, self.dac_conversions, self.adc_conversions = 0.0, 0, 0

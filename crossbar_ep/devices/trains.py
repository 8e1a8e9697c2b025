"""Synthetic measurements: pulse trains of devices drawn from a card, read after every pulse,
through the device arrays' own simulation (:class:`~crossbar_ep.devices.DeviceArray`: the
card's device-to-device draw, cycle-to-cycle noise, write noise, bounds).

``crossbar-ep device trains CARD -o data.csv`` writes them in the fit's CSV format
(:mod:`crossbar_ep.devices.fit_data`): a way to try ``crossbar-ep device fit`` and the data the
fit's recovery tests use.
"""

from __future__ import annotations

import numpy as np


def simulate_trains(card, n_devices: int, n_cycles: int, n_pulses: int, seed: int = 0,
                    start: float = 0.5) -> list:
    """Rows (device, cycle, pulse, sign, conductance_S): each device is programmed to the
    fraction ``start`` of the card's range, then every cycle applies ``n_pulses`` SET then
    ``n_pulses`` RESET pulses, one at a time; pulse 0 of each cycle is the read before it.
    Reads are the conductance as written (no drift: the pulses are back to back)."""
    if not card.pulsed:
        raise ValueError(f"the {card.model} device takes exact updates, not pulses")
    from crossbar_ep.devices import DeviceArray

    rng = np.random.default_rng(seed)
    arr = DeviceArray(card, (1, n_devices), rng)
    arr.program(np.full(n_devices, card.w_min + start * (card.w_max - card.w_min)))
    rows = []
    ones = np.ones((1, n_devices), np.int64)
    for cyc in range(n_cycles):
        g = arr.conductance(drifted=False)[0]
        rows += [(f"d{d}", cyc, 0, 0, g[d]) for d in range(n_devices)]
        for k in range(2 * n_pulses):
            sign = 1 if k < n_pulses else -1
            arr.pulse(sign * ones)
            g = arr.conductance(drifted=False)[0]
            rows += [(f"d{d}", cyc, k + 1, sign, g[d]) for d in range(n_devices)]
    rows.sort(key=lambda r: (int(r[0][1:]), r[1], r[2]))
    return rows

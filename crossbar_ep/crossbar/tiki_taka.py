"""Tiki-Taka v2 (Gokmen, Front. Artif. Intell. 4, 699148, 2021) and its chopped variant
(c-TTv2, Rasch et al., "Fast and robust analog in-memory deep neural network training",
Nat. Commun. 2024, arXiv 2023).

Two arrays per weight matrix: the *slow* array C is the :class:`CrossbarMatrix` the network
reads (it holds the weights, ``W = C``); a *fast* array A of the same card, tiles and
periphery, programmed at W = 0, receives the EP pulses (deterministic counts with gain
``lr``).  Every ``transfer_every`` updates, ``columns`` columns of A (input lines, in turn)
are read out by a forward read with one-hot inputs (DAC, read noise and ADC of a real read;
its energy goes to the array's energy meters) and added, times ``transfer_lr``, to a digital
buffer H (n_out, n_in, weight units).  Where |H| passes the slow device's nominal step,
``n = trunc(H / eps)`` pulses (at most ``transfer_max_pulses``) go to C, and the buffer
entries that fired are reset to ``momentum * H`` (``forget_buffer``, the papers' rule: what the
pulse cap clipped is forgotten) or lose ``(1 - momentum) n eps`` (the remainder kept).
Defaults as in the papers (and IBM's aihwkit, which implements both): one column read and at
most one pulse per device per transfer, every update; TTv2 momentum 0.1, c-TTv2 momentum 0
and chopper probability 0.1; both forget.  Chopped: every input line has a sign c_j = +-1; A learns from ``c_j x_j``, the
read-out of column j is multiplied by c_j again (the gradient passes, A's offsets and
asymmetry drift alternate in sign and cancel in H), and c_j flips with probability
``chop_prob`` after each read-out of column j.

State (``rule:*`` in the array's state dict): the fast array's devices, H, the choppers, the
next column and the update counter, so runs resume exactly.
"""

from __future__ import annotations

import numpy as np

from crossbar_ep.crossbar.array import CrossbarMatrix
from crossbar_ep.crossbar.energy import EnergyMeter
from crossbar_ep.crossbar.pulses import DeterministicPulses


class TikiTaka(DeterministicPulses):
    """Tiki-Taka v2 pulse rule (scheme ``chopped_tiki_taka``: c-TTv2), from the settings'
    ``transfer_*``, ``chop_prob`` and ``buffer_*`` fields.  Defaults: one column read per
    sample of the batch every update (the builder resolves ``transfer_columns: null`` to the
    batch size; 1 when the rule is built without one), transfer_lr 1, one pulse per device and transfer, buffer forgotten where it fired
    (Gokmen 2021; Rasch et al. 2023); momentum 0.1 (TTv2) or 0 (c-TTv2) when None;
    chop_prob 0.1."""

    schemes = ("tiki_taka", "chopped_tiki_taka")

    def __init__(self, settings=None, rng: np.random.Generator | None = None, **overrides):
        super().__init__(settings, rng, **overrides)
        s = self.settings
        self.transfer_every = int(s.transfer_every)
        self.columns = int(s.transfer_columns or 1)   # null: the builder sets the batch size
        self.transfer_lr, self.tmax = float(s.transfer_lr), int(s.transfer_max_pulses)
        self.chopped, self.chop_prob = s.scheme == "chopped_tiki_taka", float(s.chop_prob)
        self.forget = bool(s.buffer_forget)
        m = s.buffer_momentum
        self.momentum = (0.0 if self.chopped else 0.1) if m is None else float(m)

    def create_state(self) -> None:
        """Build the fast array (same card, periphery, tiles and weight scale, programmed at
        zero with the card's programming noise) and the zero buffer."""
        cb = self.array
        fast = CrossbarMatrix(np.zeros((cb.n_out, cb.n_in)), cb.card, cb.rng, cb.per,
                              cb.signed, cb.tiling.tile_rows, cb.tiling.tile_cols,
                              cb.scale, cb.dtype, cb.wires, cb.iv)   # max|0| -> 1: S = scale
        self.state.update(fast=fast, H=np.zeros((cb.n_out, cb.n_in)), chop=np.ones(cb.n_in),
                          col=np.array(0), count=np.array(0))

    def apply(self, pre: np.ndarray, delta: np.ndarray, scale: float) -> dict:
        cb = self._bound()
        st = self.state
        fast, H, chop = st["fast"], st["H"], st["chop"]
        if not fast.observers:     # the fast array's reads cost energy like any read
            fast.observers = [o for o in cb.observers if isinstance(o, EnergyMeter)]
        x = pre * chop.astype(pre.dtype) if self.chopped else pre
        g = np.matmul(np.asarray(delta).T, x)
        g *= scale
        fired_fast = fast.apply_update(cb.lr * g, self.max_pulses)
        program = fast.last_program_J
        st["count"] = np.array(int(st["count"]) + 1)
        info = {"fast_pulses": fired_fast, "transfer_reads": 0, "transfer_pulses": 0}
        fired_slow, counts = 0, None
        if int(st["count"]) % self.transfer_every == 0:
            cols = (int(st["col"]) + np.arange(min(self.columns, cb.n_in))) % cb.n_in
            st["col"] = np.array((int(st["col"]) + cols.size) % cb.n_in)
            E = np.zeros((cols.size, cb.n_in), cb.dtype)
            E[np.arange(cols.size), cols] = 1.0
            read = fast.forward(E).astype(float).T        # (n_out, k): A[:, cols], as read
            Hc = np.ascontiguousarray(H[:, cols] + self.transfer_lr * read * chop[cols])
            if cb.card.pulsed:
                pf = cb.mapping.pulse_factor()
                n = np.clip(np.trunc(Hc * pf), -self.tmax, self.tmax).astype(np.int64)
                if self.forget:     # fired entries keep momentum * H, the rest all of it
                    Hc = np.where(n != 0, self.momentum * Hc, Hc)
                else:               # fired entries lose (1 - momentum) of the pulses' change
                    Hc -= (1.0 - self.momentum) * n / pf
                counts = np.zeros((cb.n_out, cb.n_in), np.int64)
                counts[:, cols] = n
                fired_slow, slow_J = cb.fire(counts)
                program += slow_J
            else:                                          # exact card: the whole buffer
                dW = np.zeros((cb.n_out, cb.n_in))
                dW[:, cols] = Hc
                cb.mapping.change_exact(cb.mapping.device_change(dW))
                Hc *= self.momentum
            H[:, cols] = Hc
            if self.chopped:
                flip = self.rng.random(cols.size) < self.chop_prob
                chop[cols[flip]] *= -1.0
            cb.refresh()
            info.update(transfer_reads=int(cols.size), transfer_pulses=fired_slow)
        self.info = info
        return {"pulses": fired_fast + fired_slow, "program_J": program, "counts": counts,
                **info}

    def stats(self) -> dict:
        """Fraction of the fast array's devices at a bound, and the buffer's rms (weight
        units)."""
        st = self.state
        return {"fast_at_bound": st["fast"].at_bound_fraction(),
                "buffer_rms": float(np.sqrt(np.mean(st["H"] ** 2)))}

    def state_dict(self) -> dict:
        st = self.state
        out = {f"fast:{k}": v for k, v in st["fast"].state_dict().items()}
        out.update(H=st["H"], chop=st["chop"], col=st["col"], count=st["count"])
        return out

    def optional_state(self) -> set:
        return {f"fast:{k}" for k in self.state["fast"].optional_state}

    def load_state_dict(self, state: dict) -> None:
        st = self.state
        st["fast"].load_state_dict({k[5:]: v for k, v in state.items()
                                    if k.startswith("fast:")})
        np.copyto(st["H"], state["H"])
        np.copyto(st["chop"], state["chop"])
        st["col"], st["count"] = np.array(int(state["col"])), np.array(int(state["count"]))

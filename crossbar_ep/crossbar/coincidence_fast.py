"""Faster kernels for the signed coincidence counts of packed bit streams; each gives exactly
the counts of the reference kernel :func:`~crossbar_ep.crossbar.coincidence.coincidences`
from the same streams (tests/test_coincidence.py), so the pulse statistics are unchanged.

- :func:`packed_coincidences`: the reference's AND + popcount pass over the inputs for every
  (sample, column) word that fires, with int8 signs and int32 counts (half the bytes per
  input, the sign of the column hoisted out of the pass);
- :func:`listed_coincidences`: for very sparse streams, lists for each sample and slot the
  rows and columns firing there (by sign) and adds +-1 per (column, row) pair: its work is
  the number of coincidences plus one pass over the stream words.

:func:`~crossbar_ep.crossbar.coincidence.coincidence_counts` runs the one with less expected
work (:func:`expected_work`).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of a uint64 (LLVM ctpop)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


@intrinsic
def _lowest_bit(typingctx, x):
    """Index (int64) of the lowest set bit of a nonzero uint64 (LLVM cttz)."""
    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], context.get_constant(types.boolean, True))
    return types.int64(types.uint64), codegen


# Cost of the packed kernel per (sample, column) word x input (a vectorised AND + popcount)
# and of the listing kernel per coincidence (a scattered +-1) and per stream word scanned, in
# the same unit, measured on one core (the choice only moves time, never the counts).
DENSE_COST, LISTED_COST, SCAN_COST = 1.0, 12.0, 20.0


def expected_work(P: np.ndarray, sx: np.ndarray, Q: np.ndarray, sd: np.ndarray,
                  bl: int) -> tuple[float, float]:
    """(packed, listing) expected work for rows firing with probabilities P (B, n_in) and
    columns with Q (B, n_out) in each of bl slots, signs sx, sd (0: never counted): the
    packed kernel passes over the inputs for every (sample, column) whose stream fires; the
    listing kernel adds one sign per coincidence, ``bl sum_b (sum_j P) (sum_i Q)``, after one
    pass over the stream words."""
    Pa = np.where(sx != 0, P, 0.0)
    Qa = np.where(sd != 0, Q, 0.0)
    B, n_in = P.shape
    dense = n_in * float(np.sum(1.0 - (1.0 - Qa) ** bl))
    pairs = bl * float(np.sum(Pa.sum(axis=1) * Qa.sum(axis=1)))
    return DENSE_COST * dense, LISTED_COST * pairs + SCAN_COST * B * (n_in + Q.shape[1])


@numba.njit(cache=True)
def packed_coincidences(rows, sx, cols, sd):
    """Signed coincidence counts (n_out, n_in), int64, as the reference kernel: every
    (sample, column) word that fires is ANDed with every row word of the sample and the
    common bits counted, with int8 signs and int32 counts."""
    B, words, n_in = rows.shape
    n_out = cols.shape[2]
    sx8 = sx.astype(np.int8)
    out = np.zeros((n_out, n_in), np.int32)
    for i in range(n_out):
        acc = out[i]
        for b in range(B):
            s = sd[b, i]
            if s == 0:
                continue
            sb = sx8[b]
            for w in range(words):
                c = cols[b, w, i]
                if c == 0:
                    continue
                rb = rows[b, w]
                if s > 0:
                    for j in range(n_in):
                        acc[j] += np.int32(sb[j]) * np.int32(_popcount(rb[j] & c))
                else:
                    for j in range(n_in):
                        acc[j] -= np.int32(sb[j]) * np.int32(_popcount(rb[j] & c))
    return out.astype(np.int64)


@numba.njit(cache=True)
def _list_slots(streams, signs, b, pos, neg, npos, nneg):
    """The lines of sample b firing in each slot, by sign: ``pos[t, :npos[t]]`` and
    ``neg[t, :nneg[t]]`` (line indices, in line order)."""
    npos[:] = 0
    nneg[:] = 0
    words, n = streams.shape[1], streams.shape[2]
    for w in range(words):
        for j in range(n):
            r = streams[b, w, j]
            if r == 0:
                continue
            s = signs[b, j]
            while r:
                t = w * 64 + _lowest_bit(r)
                if s > 0:
                    pos[t, npos[t]] = j
                    npos[t] += 1
                elif s < 0:
                    neg[t, nneg[t]] = j
                    nneg[t] += 1
                r &= r - np.uint64(1)


@numba.njit(cache=True)
def _add_pairs(out, cols, ncols, rows, nrows, sign):
    """out[i, j] += sign for every listed column i and row j."""
    for a in range(ncols):
        line = out[cols[a]]
        for e in range(nrows):
            line[rows[e]] += sign


@numba.njit(cache=True)
def listed_coincidences(rows, sx, cols, sd, bl):
    """Signed coincidence counts (n_out, n_in), int64, summed over the batch, equal to
    :func:`~crossbar_ep.crossbar.coincidence.coincidences` of the same streams (B, words, n)
    of uint64 and signs (B, n) of -1, 0, 1; bl: the slots used (bits beyond them are 0)."""
    B, words, n_in = rows.shape
    n_out = cols.shape[2]
    slots = words * 64
    out = np.zeros((n_out, n_in), np.int32)
    rp = np.empty((slots, n_in), np.int32)
    rn = np.empty((slots, n_in), np.int32)
    cp = np.empty((slots, n_out), np.int32)
    cn = np.empty((slots, n_out), np.int32)
    nrp = np.zeros(slots, np.int64)
    nrn = np.zeros(slots, np.int64)
    ncp = np.zeros(slots, np.int64)
    ncn = np.zeros(slots, np.int64)
    for b in range(B):
        _list_slots(cols, sd, b, cp, cn, ncp, ncn)
        if not (ncp.any() or ncn.any()):
            continue
        _list_slots(rows, sx, b, rp, rn, nrp, nrn)
        for t in range(min(bl, slots)):
            _add_pairs(out, cp[t], ncp[t], rp[t], nrp[t], 1)
            _add_pairs(out, cp[t], ncp[t], rn[t], nrn[t], -1)
            _add_pairs(out, cn[t], ncn[t], rp[t], nrp[t], -1)
            _add_pairs(out, cn[t], ncn[t], rn[t], nrn[t], 1)
    return out.astype(np.int64)

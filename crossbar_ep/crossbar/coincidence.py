"""Stochastic pulse coincidence (Gokmen & Vlasov, Front. Neurosci. 2016): random bit streams
on the rows and columns of an array; a device steps where its row's and its column's streams
both fire.

:func:`coincidence_counts` turns a batch of local signals into signed pulse counts per device.
The kernels: :func:`bit_streams` (the streams, packed in uint64 words) and
:func:`coincidences` (the signed coincidence counts); :func:`binomial_reference` draws the
marginal law of a count for tests.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from crossbar_ep import fastrng


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of a uint64 (LLVM ctpop: one instruction where the CPU has it)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


_P_BITS = 24  # resolution of the firing probabilities: 2^-24, stochastically rounded


@numba.njit(cache=True)
def bit_streams(P, bl, seed):
    """Random bit streams (B, words, n) of uint64, words = ceil(bl / 64): bit t of stream
    (b, j) is 1 with probability P[b, j], independently, for the bl slots (bits beyond bl are
    0).  Built without a loop over slots by the binary-expansion method: m = P 2^24
    (stochastically rounded, so E = P exactly) and, from the least significant bit of m up,
    ``r = r | R`` for a 1 bit and ``r = r & R`` for a 0 bit, with fresh random words R from
    per-lane xorshift128+ streams (vectorised across the n lanes)."""
    B, n = P.shape
    words = (bl + 63) // 64
    out = np.empty((B, words, n), np.uint64)
    s0 = np.empty(n, np.uint64)
    s1 = np.empty(n, np.uint64)
    m = np.empty(n, np.uint64)
    k = fastrng.key(seed)
    fastrng.seed_lanes(k, s0, s1)
    full = np.uint64(1 << _P_BITS)
    zero, one, ones = np.uint64(0), np.uint64(1), ~np.uint64(0)
    rem = bl % 64
    tail = (one << np.uint64(rem)) - one if rem else ones
    for b in range(B):
        for j in range(n):
            x = P[b, j] * np.float64(full)
            f = np.floor(x)
            m[j] = np.uint64(f) + (one if fastrng.uniform(k, b * n + j) < x - f else zero)
        for w in range(words):
            r = out[b, w]
            r[:] = zero
            for t in range(_P_BITS):
                sh = np.uint64(t)
                for j in range(n):
                    R = fastrng.lane_u64(s0, s1, j)
                    bm = zero - ((m[j] >> sh) & one)
                    r[j] = (r[j] & R) | (bm & (r[j] | R))
            keep = tail if w == words - 1 else ones
            for j in range(n):
                if m[j] >= full:
                    r[j] = keep
                elif m[j] == zero:
                    r[j] = zero
                else:
                    r[j] &= keep
    return out


@numba.njit(cache=True)
def coincidences(rows, sx, cols, sd):
    """Signed coincidence counts (n_out, n_in) summed over the batch: device (i, j) counts
    the slots where row j's and column i's streams (B, words, n) both fire, with sign
    sx[b, j] * sd[b, i]."""
    B, words, n_in = rows.shape
    n_out = cols.shape[2]
    out = np.zeros((n_out, n_in), np.int64)
    for i in range(n_out):
        acc = out[i]
        for b in range(B):
            s = sd[b, i]
            if s == 0:
                continue
            sb = sx[b]
            for w in range(words):
                c = cols[b, w, i]
                if c == 0:
                    continue
                rb = rows[b, w]
                for j in range(n_in):
                    acc[j] += s * sb[j] * np.int64(_popcount(rb[j] & c))
    return out


@numba.njit(cache=True)
def binomial_reference(P, sx, Q, sd, bl, seed):
    """Per device and sample an independent Binomial(bl, P q) draw, summed over the batch
    (the marginal law of :func:`coincidences`, for tests)."""
    np.random.seed(seed)
    B, n_in = P.shape
    out = np.zeros((Q.shape[1], n_in), np.int64)
    for i in range(Q.shape[1]):
        for b in range(B):
            for j in range(n_in):
                r = P[b, j] * Q[b, i]
                if r > 0.0:
                    out[i, j] += sx[b, j] * sd[b, i] * np.random.binomial(bl, r)
    return out


def coincidence_counts(cb, x: np.ndarray, delta: np.ndarray, lr: float,
                       bl: int, management: bool, rng: np.random.Generator) -> np.ndarray:
    """Stochastic pulse coincidence (Gokmen & Vlasov 2016) for the batch-mean update
    lr * mean_b(delta_b outer x_b): rows fire with p = A|x|, columns with q = B|delta|,
    A B = lr / (B_batch * bl * dw_min_in_weight_units); update management balances A and B by
    sqrt(max|delta| / max|x|).  Expected signed count = lr * mean(delta x) / step."""
    Bn = x.shape[0]
    step_w = cb.card.mean_step * 2 * cb.scale / (cb.card.w_max - cb.card.w_min)
    c = lr / (Bn * bl * step_w)
    a = b = np.sqrt(c)
    mx, md = float(np.abs(x).max()), float(np.abs(delta).max())
    if management and mx > 0 and md > 0:
        a, b = a * np.sqrt(md / mx), b * np.sqrt(mx / md)
    P = np.minimum(a * np.abs(x), 1.0)
    Q = np.minimum(b * np.abs(delta), 1.0)
    rows = bit_streams(np.ascontiguousarray(P, dtype=float), bl, int(rng.integers(0, 2**62)))
    cols = bit_streams(np.ascontiguousarray(Q, dtype=float), bl, int(rng.integers(0, 2**62)))
    return coincidences(rows, np.sign(x).astype(np.int64), cols,
                        np.sign(delta).astype(np.int64))

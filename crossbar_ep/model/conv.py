"""Convolution as a weight operator: im2col / col2im, 2x2 max-pooling with switches, and the
convolutional FRE-RNN's network (layers, kernels, init).

Maps are kept channels-last, ``(B, H, W, C)``.  A kernel of a layer ``C_in -> C_out`` with
size ``k`` is one matrix of shape ``(C_out, k * k * C_in)`` (column index
``(ky * k + kx) * C_in + c``), held by an ordinary matrix operator
(:class:`~crossbar_ep.model.operators.DigitalMatrix`, or a crossbar array): a convolution is
one read of that matrix per output position (a GEMM over the patch matrix), its transpose one
transposed read per position followed by col2im (overlap-add).  Pooling is 2 x 2, stride 2;
ties go to the first maximum in row-major window order ((0,0), (0,1), (1,0), (1,1)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided

from crossbar_ep.model.conv_kernels import col2im_nb, im2col_nb
from crossbar_ep.model.network import Block, Feedback, Network, Projection
from crossbar_ep.model.normalisation import normalisers
from crossbar_ep.model.operators import WeightOperator


# Bytes of patch matrix the settle loop builds and reads at a time (ConvOperator._chunks):
# about the two cores' L2 caches together.  Measured on the 2-core machine, one conv batch
# interleaved: 2 MiB 641-824 ms, 1 MiB 661-815, 512 KiB 732-944, 8 MiB 740-949 (min-median).
CHUNK_BYTES = 2 << 20


@dataclass(frozen=True)
class ConvGeom:
    """One conv layer: input (h_in, w_in, c_in), kernel k x k, zero padding ``pad``, stride 1,
    c_out output channels, followed by 2 x 2 max-pooling."""

    c_in: int
    h_in: int
    w_in: int
    c_out: int
    k: int
    pad: int

    @property
    def h_out(self) -> int:
        return self.h_in + 2 * self.pad - self.k + 1

    @property
    def w_out(self) -> int:
        return self.w_in + 2 * self.pad - self.k + 1

    @property
    def pooled(self) -> tuple:
        """(h, w, c) of the pooled map."""
        return (self.h_out // 2, self.w_out // 2, self.c_out)

    @property
    def positions(self) -> int:
        return self.h_out * self.w_out

    @property
    def patch(self) -> int:
        return self.k * self.k * self.c_in


def im2col(x: np.ndarray, k: int, pad: int, out: np.ndarray | None = None) -> np.ndarray:
    """Patch matrix of maps x (B, H, W, C): (B * Ho * Wo, k * k * C), rows ordered
    (b, oy, ox), columns (ky, kx, c) (Numba; :func:`im2col_ref` is the NumPy reference)."""
    B, H, W, C = x.shape
    Ho, Wo = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    if out is None:
        out = np.empty((B * Ho * Wo, k * k * C), x.dtype)
    return im2col_nb(np.ascontiguousarray(x), k, pad, out)


def col2im(cols: np.ndarray, B: int, H: int, W: int, C: int, k: int, pad: int) -> np.ndarray:
    """Adjoint of :func:`im2col`: overlap-add of patch rows (B * Ho * Wo, k * k * C) into
    maps (B, H, W, C) (Numba; :func:`col2im_ref` is the NumPy reference)."""
    out = np.empty((B, H, W, C), cols.dtype)
    return col2im_nb(np.ascontiguousarray(cols), out, k, pad)


def im2col_ref(x: np.ndarray, k: int, pad: int, out: np.ndarray | None = None) -> np.ndarray:
    """NumPy (strided view) version of :func:`im2col`."""
    B, H, W, C = x.shape
    if pad:
        xp = np.zeros((B, H + 2 * pad, W + 2 * pad, C), x.dtype)
        xp[:, pad:pad + H, pad:pad + W] = x
    else:
        xp = np.ascontiguousarray(x)
    Ho, Wo = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    sB, sH, sW, sC = xp.strides
    view = as_strided(xp, (B, Ho, Wo, k, k, C), (sB, sH, sW, sH, sW, sC), writeable=False)
    if out is None:
        out = np.empty((B * Ho * Wo, k * k * C), x.dtype)
    np.copyto(out.reshape(B, Ho, Wo, k, k, C), view)
    return out


def col2im_ref(cols: np.ndarray, B: int, H: int, W: int, C: int, k: int,
               pad: int) -> np.ndarray:
    """NumPy version of :func:`col2im`."""
    Hp, Wp = H + 2 * pad, W + 2 * pad
    Ho, Wo = Hp - k + 1, Wp - k + 1
    c = cols.reshape(B, Ho, Wo, k, k, C)
    out = np.zeros((B, Hp, Wp, C), cols.dtype)
    for i in range(k):
        for j in range(k):
            out[:, i:i + Ho, j:j + Wo] += c[:, :, :, i, j]
    return out[:, pad:pad + H, pad:pad + W] if pad else out


def to_maps(x: np.ndarray, in_shape: tuple) -> np.ndarray:
    """Flat images (B, C*H*W) in channel-first order -> maps (B, H, W, C)."""
    C, H, W = in_shape
    return np.ascontiguousarray(x.reshape(-1, C, H, W).transpose(0, 2, 3, 1))


def pool2(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2 x 2 max-pooling, stride 2, of maps (B, H, W, C) -> (pooled (B, H//2, W//2, C),
    switches uint8 0..3: the window position of the first maximum in row-major order)."""
    H2, W2 = s.shape[1] // 2, s.shape[2] // 2
    a = s[:, 0:2 * H2:2, 0:2 * W2:2]
    m = a.copy()
    idx = np.zeros(m.shape, np.uint8)
    for code, (dy, dx) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
        v = s[:, dy:2 * H2:2, dx:2 * W2:2]
        gt = v > m
        idx[gt] = code
        np.maximum(m, v, out=m)
    return m, idx


def unpool2(g: np.ndarray, idx: np.ndarray, H: int, W: int) -> np.ndarray:
    """Adjoint of :func:`pool2` for fixed switches: g (B, H//2, W//2, C) placed at each
    window's switch position of maps (B, H, W, C), zeros elsewhere."""
    B, H2, W2, C = g.shape
    out = np.zeros((B, H, W, C), g.dtype)
    for code, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[:, dy:2 * H2:2, dx:2 * W2:2] = np.where(idx == code, g, 0)
    return out


class ConvOperator(WeightOperator):
    """A convolution (stride 1, zero padding) as a weight operator over flattened maps:
    forward ``(B, H*W*C_in) -> (B, Ho*Wo*C_out)``, transposed the adjoint (convT, tied).

    ``matrix`` is the kernel matrix operator (C_out, k*k*C_in): every patch is one read of
    it, the transposed conv one transposed read per position plus col2im.  Updates go to the
    matrix as ``scale * sum over (image, position) of delta (x) patch``.  Not
    ``exact_linear`` as a dense map (its Toeplitz matrix is never formed); ``dense`` is the
    kernel matrix.
    """

    exact_linear = False

    def __init__(self, geom: ConvGeom, matrix: WeightOperator):
        super().__init__()
        self.g, self.matrix = geom, matrix
        self.n_in = geom.h_in * geom.w_in * geom.c_in
        self.n_out = geom.positions * geom.c_out
        self.dtype = matrix.dtype
        self._scratch: dict = {}
        self._plan = None         # ((B, CHUNK_BYTES, dtype), _chunks' answer)

    def _buffer(self, role: str, shape: tuple) -> np.ndarray:
        """A patch-matrix buffer reused across calls (a fresh one each settle step costs its
        page faults and zeroing); its contents live until the next call with the same
        role."""
        buf = self._scratch.get(role)
        if buf is None or buf.shape != shape or buf.dtype != self.dtype:
            buf = self._scratch[role] = np.empty(shape, self.dtype)
        return buf

    def _chunks(self, B: int) -> tuple[int, list]:
        """(images per chunk, [(b0, b1), ...]): the settle loop's patch matrices are built,
        read and folded back chunk by chunk, each about ``CHUNK_BYTES``, so they stay in the
        cache between im2col, the read and col2im instead of streaming tens of MB through
        memory.  Fixed sizes: results do not depend on the machine."""
        key = (B, CHUNK_BYTES, self.dtype)
        hit = self._plan
        if hit is None or hit[0] != key:
            g = self.g
            n = max(1, min(B, CHUNK_BYTES // (g.positions * g.patch * self.dtype.itemsize)))
            hit = self._plan = (key, (n, [(b0, min(B, b0 + n)) for b0 in range(0, B, n)]))
        return hit[1]

    def patches(self, x: np.ndarray, reuse: bool = False) -> np.ndarray:
        """Patch matrix of maps x: a new array, or with ``reuse`` the operator's own update
        buffer (valid until the next ``reuse`` call; saves the page faults of ~26 MB per
        batch on the MNIST net)."""
        g = self.g
        X = x.reshape(-1, g.h_in, g.w_in, g.c_in)
        out = self._buffer("update", (X.shape[0] * g.positions, g.patch)) if reuse else None
        return im2col(X, g.k, g.pad, out)

    def conv_cols(self, cols: np.ndarray, B: int, gain: float = 1.0) -> np.ndarray:
        """Maps (B, Ho, Wo, C_out) from a patch matrix (one read per row)."""
        g = self.g
        out = np.empty((cols.shape[0], g.c_out), self.dtype)
        self.matrix.read_into(cols, out, gain)
        return out.reshape(B, g.h_out, g.w_out, g.c_out)

    def conv(self, x: np.ndarray, gain: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
        """Maps (B, Ho, Wo, C_out) of input maps x (B, ...): im2col and one read per patch,
        chunk by chunk (into ``out``, C-contiguous maps, when given)."""
        g = self.g
        B = x.size // self.n_in
        X = np.ascontiguousarray(x).reshape(B, g.h_in, g.w_in, g.c_in)
        out = (np.empty((B * g.positions, g.c_out), self.dtype) if out is None
               else out.reshape(B * g.positions, g.c_out))
        n, chunks = self._chunks(B)
        P = g.positions
        buf = self._buffer("patches", (n * P, g.patch))
        for b0, b1 in chunks:
            cols = im2col_nb(X[b0:b1], g.k, g.pad, buf[:(b1 - b0) * P])
            self.matrix.read_into(cols, out[b0 * P:b1 * P], gain)
        return out.reshape(B, g.h_out, g.w_out, g.c_out)

    def conv_t(self, y: np.ndarray, gain: float = 1.0) -> np.ndarray:
        """Transposed conv of maps y (B, Ho, Wo, C_out) -> (B, H, W, C_in): one transposed
        read per position and col2im, chunk by chunk."""
        g = self.g
        B = y.shape[0]
        Y = np.ascontiguousarray(y).reshape(-1, g.c_out)
        out = np.empty((B, g.h_in, g.w_in, g.c_in), self.dtype)
        n, chunks = self._chunks(B)
        P = g.positions
        buf = self._buffer("patches", (n * P, g.patch))   # conv's: half the cache footprint
        for b0, b1 in chunks:
            cols = buf[:(b1 - b0) * P]
            self.matrix.read_transposed_into(Y[b0 * P:b1 * P], cols, gain)
            col2im_nb(cols, out[b0:b1], g.k, g.pad)
        return out

    def dense(self) -> np.ndarray:
        return self.matrix.dense()

    def read_into(self, v, out, gain=1.0, accumulate=False):
        r = self.conv(v, gain).reshape(v.shape[0], -1)
        if accumulate:
            out += r
        else:
            np.copyto(out, r)
        return out

    def read_transposed_into(self, y, out, gain=1.0, accumulate=False):
        g = self.g
        r = self.conv_t(y.reshape(-1, g.h_out, g.w_out, g.c_out), gain).reshape(y.shape[0], -1)
        if accumulate:
            out += r
        else:
            np.copyto(out, r)
        return out

    def update(self, pre, delta, scale):
        """pre: input maps (B, n_in); delta: output-map signals (B, n_out)."""
        self.matrix.update(self.patches(pre), np.ascontiguousarray(delta).reshape(
            -1, self.g.c_out), scale)
        self.changed()

    def state_dict(self) -> dict:
        return self.matrix.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.matrix.load_state_dict(state)
        self.changed()


@dataclass
class ConvNetwork(Network):
    """A convolutional FRE-RNN: conv layers ``C1 .. CL`` (each followed by 2 x 2 max-pooling)
    and a linear readout ``Wf`` of the flattened last pooled map.  ``ops`` holds the kernel
    matrices (C_out, k*k*C_in) and Wf (n_out, n_pooled); ``convs[k-1]`` wraps layer k's kernel
    matrix as a :class:`ConvOperator`.  ``beta_i`` holds the feedback gain into layers
    1..L-1.  Biases ``b[k]`` are per channel."""

    in_shape: tuple = (1, 28, 28)      # (C, H, W) of the input images
    convs: list = field(default_factory=list)
    beta_i: tuple = ()
    feedback_convs: list = field(default_factory=list)   # fixed random kernels (asymmetric)

    def emitted_size(self, k: int) -> int:
        """Width of layer k's flattened pooled map."""
        return int(np.prod(self.convs[k - 1].g.pooled))

    def init_readout(self, rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
        """PyTorch-default init of a readout added later: U(+-1/sqrt(n_in))."""
        lim = 1.0 / math.sqrt(n_in)
        return rng.uniform(-lim, lim, (n_out, n_in)).astype(self.dtype)

    @property
    def conv_ops(self) -> dict:
        """Operator name -> :class:`ConvOperator` of every kernel: the layers' and the fixed
        random feedback kernels of an asymmetric net."""
        return {c.name: c for c in (*self.convs, *self.feedback_convs)}

    def attach(self, name: str, op) -> None:
        super().attach(name, op)
        for c in self.conv_ops.values():
            if c.name == name:
                c.matrix = op
                c.dtype = op.dtype


def conv_geoms(in_shape, channels, kernels, pads) -> list:
    """ConvGeom per layer of an input (C, H, W) and per-layer channels, kernel sizes and
    paddings; raises ValueError where a map becomes empty."""
    C, H, W = (int(v) for v in in_shape)
    out = []
    for i, (c, k, p) in enumerate(zip(channels, kernels, pads)):
        g = ConvGeom(C, H, W, int(c), int(k), int(p))
        if g.h_out < 2 or g.w_out < 2:
            raise ValueError(f"conv layer {i + 1}: a {H}x{W} map with kernel {k} and padding "
                             f"{p} leaves {g.h_out}x{g.w_out}, too small to pool")
        out.append(g)
        H, W, C = g.pooled
    return out


def make_conv_network(in_shape, channels, n_out: int, rng: np.random.Generator | int = 0, *,
                      kernel=5, padding=0, beta_i=0.01, beta_f: float = 0.25, lr=1e-3,
                      dtype="float32", activation: str = "hard_sigmoid",
                      feedback: str = "symmetric") -> ConvNetwork:
    """A conv FRE-RNN with PyTorch-default init: every weight and bias U(+-1/sqrt(fan_in))
    (fan_in = k*k*C_in for a kernel, the pooled size for Wf), drawn layer by layer (weights,
    then biases), then Wf and its bias.  kernel, padding: one value or one per layer; beta_i:
    feedback gain into layers 1..L-1 (one value or L); lr: one value or L+1; activation: the
    neurons' rho (:mod:`crossbar_ep.model.activations`); feedback: ``symmetric`` (transposed
    reads of the forward kernels and of Wf) or ``random`` (fixed random kernels ``B<k>`` of
    the forward kernels' shapes and a fixed random nudge matrix ``Bf``, drawn after every
    trained weight, so a symmetric and a random net share their init)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    dtype = np.dtype(dtype)
    L = len(channels)
    per = (lambda v, n: tuple(v) if np.ndim(v) else (v,) * n)
    kernels, pads = per(kernel, L), per(padding, L)
    beta, lrs = per(beta_i, L), per(lr, L + 1)
    geoms = conv_geoms(in_shape, channels, kernels, pads)
    from crossbar_ep.model.operators import DigitalMatrix

    sizes = (int(np.prod(in_shape)), *(g.positions * g.c_out for g in geoms), int(n_out))
    projections = [Projection(f"C{k}", k - 1, k) for k in range(1, L + 1)]
    projections.append(Projection("Wf", L, L + 1))
    symmetric = feedback == "symmetric"
    feedbacks = [Feedback(f"B{k}", k + 1, k, float(beta[k - 1]),
                          f"C{k + 1}" if symmetric else None) for k in range(1, L)]
    net = ConvNetwork(sizes, projections, feedbacks, symmetric, float(beta_f), activation,
                      in_shape=tuple(int(v) for v in in_shape), beta_i=tuple(map(float, beta)))
    for k, g in enumerate(geoms, start=1):
        lim = 1.0 / math.sqrt(g.patch)
        W = rng.uniform(-lim, lim, (g.c_out, g.patch)).astype(dtype)
        net.ops[f"C{k}"] = DigitalMatrix(W, f"C{k}")
        net.b[k] = rng.uniform(-lim, lim, g.c_out).astype(dtype)
        op = ConvOperator(g, net.ops[f"C{k}"])
        op.name = f"C{k}"
        net.convs.append(op)
    n_flat = int(np.prod(geoms[-1].pooled))
    lim = 1.0 / math.sqrt(n_flat)
    net.ops["Wf"] = DigitalMatrix(rng.uniform(-lim, lim, (n_out, n_flat)).astype(dtype), "Wf")
    net.b[L + 1] = rng.uniform(-lim, lim, n_out).astype(dtype)
    if not symmetric:        # fixed random feedback kernels and nudge matrix, drawn last
        for f in feedbacks:
            g = geoms[f.src - 1]
            lim = 1.0 / math.sqrt(g.patch)
            W = rng.uniform(-lim, lim, (g.c_out, g.patch)).astype(dtype)
            net.ops[f.name] = DigitalMatrix(W, f.name, trainable=False)
            op = ConvOperator(g, net.ops[f.name])
            op.name = f.name
            net.feedback_convs.append(op)
        lim = 1.0 / math.sqrt(n_flat)
        net.ops["Bf"] = DigitalMatrix(rng.uniform(-lim, lim, (n_out, n_flat)).astype(dtype),
                                      "Bf", trainable=False)
    net.blocks = [Block(p.name, p.src, p.dst) for p in projections]
    net.blocks += [Block(f.tied or f.name, f.src, f.dst, f.scale, True) for f in feedbacks]
    net.blocks.append(Block("Wf" if symmetric else "Bf", L + 1, L, net.beta_f, True))
    for k in range(1, L + 2):
        name = f"C{k}" if k <= L else "Wf"
        net.lr[name] = net.lr[f"b{k}"] = float(lrs[k - 1])
    net.norm = normalisers(net)
    return net

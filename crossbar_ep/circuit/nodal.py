"""Exact nodal analysis of one crossbar tile with wire resistance (IR drop).

A tile has ``m`` rows (word lines) and ``n`` physical columns (bit lines) with one conductance
``G[i, j]`` (S) at each crossing.  Every crossing has a row node ``u[i, j]`` and a column node
``v[i, j]``; neighbouring row nodes are joined by ``r_row`` (ohm per cell pitch), neighbouring
column nodes by ``r_col``.  Drivers sit at the row starts (column 0 side) and column feet
(row m - 1 side) behind ``r_driver``; sense amplifiers hold their line end at virtual ground
behind ``r_sense``.

- forward read: rows driven (``V[i]`` at row i's start), columns sensed at their feet;
- transposed read: columns driven at their feet, rows sensed at their starts.

KCL gives a sparse symmetric positive-definite system ``A x = b`` (a weighted graph Laplacian
with the drivers and sense amplifiers as Dirichlet terminals).  ``A`` depends only on the
conductances, so one sparse LU factorisation serves every read until the next programming;
for linear devices the sensed currents are a linear map of the drive voltages,
``I = M V``, and :meth:`TileCircuit.effective_matrix` computes ``M`` (one solve per sensed
line) so that each later read is a matrix product.  A resistance of 0 merges the nodes it
joins (ideal wire) or makes the terminal an ideal source / virtual ground; with every
resistance 0 the map is exactly ``G^T`` (forward) or ``G`` (transposed).

Node names used by the SPICE export (:mod:`crossbar_ep.circuit.spice`) follow the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


@dataclass(frozen=True)
class Wires:
    """Parasitic resistances of a tile (ohm).  0 means ideal."""

    r_row: float = 0.0       # row (word-line) segment between neighbouring crossings
    r_col: float = 0.0       # column (bit-line) segment between neighbouring crossings
    r_driver: float = 0.0    # driver output resistance at each driven line end
    r_sense: float = 0.0     # sense-amplifier input resistance at each sensed line end

    def __post_init__(self):
        for k in ("r_row", "r_col", "r_driver", "r_sense"):
            v = getattr(self, k)
            if not (v >= 0.0 and np.isfinite(v)):
                raise ValueError(f"{k}: resistance must be finite and >= 0 ohm, got {v}")

    @property
    def ideal(self) -> bool:
        return self.r_row == self.r_col == self.r_driver == self.r_sense == 0.0


class TileCircuit:
    """The resistive network of one tile for one read direction, factorised once.

    G: (m, n) conductances in siemens.  ``transposed=False``: m row drivers, n sensed columns;
    ``transposed=True``: n column drivers, m sensed rows.
    """

    def __init__(self, G: np.ndarray, wires: Wires, transposed: bool = False):
        G = np.asarray(G, dtype=float)
        if G.ndim != 2 or np.any(G < 0) or not np.all(np.isfinite(G)):
            raise ValueError("G must be a 2-D array of finite conductances >= 0 S")
        self.G, self.w, self.transposed = G, wires, transposed
        m, n = G.shape
        self.m, self.n = m, n
        self._build()

    # ------------------------------------------------------------------ network
    def _build(self) -> None:
        m, n, w, G = self.m, self.n, self.w, self.G
        # node ids: row nodes, then column nodes (merged along an ideal wire)
        if w.r_row > 0:
            u = np.arange(m * n).reshape(m, n)
        else:
            u = np.repeat(np.arange(m)[:, None], n, axis=1)
        nu = int(u.max()) + 1
        if w.r_col > 0:
            v = nu + np.arange(m * n).reshape(n, m).T          # column-major within columns
        else:
            v = nu + np.repeat(np.arange(n)[None, :], m, axis=0)
        nxt = int(v.max()) + 1
        a, b, g = [u.ravel(), ], [v.ravel()], [G.ravel()]      # devices
        if w.r_row > 0:
            a.append(u[:, :-1].ravel())
            b.append(u[:, 1:].ravel())
            g.append(np.full(m * (n - 1), 1.0 / w.r_row))
        if w.r_col > 0:
            a.append(v[:-1, :].ravel())
            b.append(v[1:, :].ravel())
            g.append(np.full((m - 1) * n, 1.0 / w.r_col))
        # driven and sensed line ends
        if not self.transposed:
            drive_end, sense_end = u[:, 0], v[m - 1, :]
        else:
            drive_end, sense_end = v[m - 1, :], u[:, 0]
        n_src = drive_end.size
        if w.r_driver > 0:
            src = nxt + np.arange(n_src)
            nxt += n_src
            a.append(src)
            b.append(drive_end)
            g.append(np.full(n_src, 1.0 / w.r_driver))
        else:
            src = drive_end.copy()
        if w.r_sense > 0:
            gnd = nxt + np.arange(sense_end.size)
            nxt += sense_end.size
            a.append(sense_end)
            b.append(gnd)
            g.append(np.full(sense_end.size, 1.0 / w.r_sense))
        else:
            gnd = sense_end.copy()
        a, b, g = np.concatenate(a), np.concatenate(b), np.concatenate(g)
        keep = a != b                                           # merged nodes: no self loops
        a, b, g = a[keep], b[keep], g[keep]
        N = nxt
        n_dev = m * n                                           # devices come first
        self._edges = (a, b, g, n_dev)
        # Laplacian
        L = sp.coo_matrix((np.concatenate([g, g, -g, -g]),
                           (np.concatenate([a, b, a, b]), np.concatenate([a, b, b, a]))),
                          shape=(N, N)).tocsr()
        fixed = np.zeros(N, bool)
        fixed[src] = True
        fixed[gnd] = True
        if np.intersect1d(src, gnd).size:
            raise ValueError("a driven line end is also a sensed one (1 x 1 ideal wires?)")
        free = np.flatnonzero(~fixed)
        self.N, self.src, self.gnd, self.free = N, src, gnd, free
        self.u_nodes, self.v_nodes = u, v
        pos = np.full(N, -1)
        pos[free] = np.arange(free.size)
        self._pos = pos
        self.A = L[free][:, free].tocsc()
        self.A_fs = L[free][:, src].tocsc()
        self.A_fg = L[free][:, gnd]
        self.L = L
        # sensed current into each ground terminal g: sum over edges (x, g) of g_e (V_x - 0)
        # = -(L[g, :] x) restricted to non-ground nodes
        self.L_g = L[gnd]
        self._lu = spla.splu(self.A) if free.size else None

    # ------------------------------------------------------------------ solves
    def node_voltages(self, V: np.ndarray) -> np.ndarray:
        """All node voltages (N,) or (N, k) for drive voltages V (n_src,) or (n_src, k)."""
        V = np.asarray(V, float)
        x = np.zeros((self.N,) + V.shape[1:])
        x[self.src] = V
        if self._lu is not None:
            x[self.free] = self._lu.solve(-(self.A_fs @ V))
        return x

    def sensed_currents(self, V: np.ndarray) -> np.ndarray:
        """Currents (A) into the sense amplifiers for drive voltages V (V), solved directly:
        (n_sense,) or (n_sense, k)."""
        x = self.node_voltages(V)
        return -(self.L_g @ x)

    def effective_matrix(self) -> np.ndarray:
        """M (n_sense, n_src) with ``I = M V``: one solve per driven line."""
        return self.sensed_currents(np.eye(self.src.size))

    def effective_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, Y) from one set of solves: M (n_sense, n_src) as :meth:`effective_matrix`, and
        the source admittance Y (n_src, n_src) in S with the source currents ``I_src = Y V``,
        so that a read draws the power ``V^T Y V`` (W) from its drivers."""
        x = self.node_voltages(np.eye(self.src.size))
        return -(self.L_g @ x), np.asarray(self.L[self.src] @ x)

    def nonlinear_node_voltages(self, V: np.ndarray, iv, tol: float = 1e-13,
                                max_iter: int = 50) -> tuple[np.ndarray, int]:
        """Node voltages (N,) for one drive vector V with device currents ``G f(V_dev)``
        (:class:`crossbar_ep.circuit.iv.IVLaw`): Newton iterations on KCL, warm-started from the
        linear solution.  Returns (x, iterations); stops when the largest update is below
        ``tol`` times the largest drive voltage."""
        a, b, g, n_dev = self._edges
        ad, bd, G = a[:n_dev], b[:n_dev], g[:n_dev]
        al, bl, gl = a[n_dev:], b[n_dev:], g[n_dev:]
        N = self.N
        L_lin = sp.coo_matrix((np.concatenate([gl, gl, -gl, -gl]),
                               (np.concatenate([al, bl, al, bl]),
                                np.concatenate([al, bl, bl, al]))), shape=(N, N)).tocsr()
        x = self.node_voltages(V)
        free = self.free
        if free.size == 0:          # every node is a terminal: nothing to solve
            return x, 0
        scale = max(float(np.max(np.abs(V))), 1e-300)
        for it in range(1, max_iter + 1):
            d = x[ad] - x[bd]
            i_dev = G * iv.f(d)
            g_dev = G * iv.df(d)
            R = L_lin @ x + np.bincount(ad, i_dev, N) - np.bincount(bd, i_dev, N)
            J = L_lin + sp.coo_matrix((np.concatenate([g_dev, g_dev, -g_dev, -g_dev]),
                                       (np.concatenate([ad, bd, ad, bd]),
                                        np.concatenate([ad, bd, bd, ad]))), shape=(N, N)).tocsr()
            dx = spla.spsolve(J[free][:, free].tocsc(), -R[free])
            x[free] += dx
            if np.max(np.abs(dx)) <= tol * scale:
                return x, it
        raise RuntimeError(f"Newton did not converge in {max_iter} iterations "
                           f"(last update {np.max(np.abs(dx)):.3g} V)")

    def nonlinear_sensed_currents(self, V: np.ndarray, iv) -> np.ndarray:
        """Sensed currents (A) for one drive vector V with the nonlinear device law ``iv``:
        the current each grounded terminal receives from its wires and devices."""
        x, _ = self.nonlinear_node_voltages(V, iv)
        a, b, g, n_dev = self._edges
        d = x[a[:n_dev]] - x[b[:n_dev]]
        i_dev = g[:n_dev] * iv.f(d)
        leave = np.bincount(a[:n_dev], i_dev, self.N) - np.bincount(b[:n_dev], i_dev, self.N)
        al, bl, gl = a[n_dev:], b[n_dev:], g[n_dev:]
        dl = gl * (x[al] - x[bl])
        leave += np.bincount(al, dl, self.N) - np.bincount(bl, dl, self.N)
        return -leave[self.gnd]

    def nonlinear_read_power(self, V: np.ndarray, iv) -> float:
        """Power (W) one read with the nonlinear device law ``iv`` dissipates, at the node
        voltages of the Newton solution: ``sum_dev G V_dev f(V_dev)`` plus the wires' and
        terminals' ``g dV^2`` (equal to the drivers' ``sum V I``)."""
        x, _ = self.nonlinear_node_voltages(V, iv)
        a, b, g, n_dev = self._edges
        d = x[a[:n_dev]] - x[b[:n_dev]]
        dl = x[a[n_dev:]] - x[b[n_dev:]]
        return float(np.sum(g[:n_dev] * d * iv.f(d)) + np.sum(g[n_dev:] * dl * dl))

    def device_voltages(self, V: np.ndarray) -> np.ndarray:
        """Voltage across every device, u - v (m, n), for one drive vector V."""
        x = self.node_voltages(V)
        return x[self.u_nodes] - x[self.v_nodes]

    def read_power(self, V: np.ndarray) -> float:
        """Power (W) dissipated in the tile (devices and wires) for one drive vector."""
        x = self.node_voltages(V)
        L = self.L.tocoo()
        mask = L.row < L.col
        d = x[L.row[mask]] - x[L.col[mask]]
        return float(np.sum(-L.data[mask] * d * d))


def ideal_read(G: np.ndarray, V: np.ndarray, transposed: bool = False) -> np.ndarray:
    """Sensed currents without wire resistance: G^T V (forward) or G V (transposed)."""
    return (G @ V) if transposed else (G.T @ V)


@numba.njit(cache=True)
def _column_blocks(G, g_c, g_s, K, c):
    """For every column j of G (m, n): eliminate the column line (tridiagonal T = diag(G_j)
    + g_c path Laplacian + g_s at the foot) in closed form by the Thomas algorithm with the
    m right-hand sides diag(G_j): Z = T^-1 diag(G_j), so v = Z u.  Writes the m x m block
    K[j] = diag(G_j) - diag(G_j) Z seen by the row lines and the sense map c[j] = g_s Z[m-1]."""
    m, n = G.shape
    cp = np.empty(m)
    d = np.empty((m, m))
    for j in range(n):
        # forward sweep: row i of the RHS is G[i, j] e_i
        for i in range(m):
            b = G[i, j] + (g_c if i > 0 else 0.0) + (g_c if i < m - 1 else 0.0)
            if i == m - 1:
                b += g_s
            if i > 0:
                denom = b + g_c * cp[i - 1]            # a_i = -g_c
                for k in range(i):
                    d[i, k] = g_c * d[i - 1, k] / denom
            else:
                denom = b
            for k in range(i + 1, m):
                d[i, k] = 0.0
            d[i, i] = G[i, j] / denom
            cp[i] = -g_c / denom
        # back substitution, in place: Z_i = d_i - cp_i Z_{i+1}
        for i in range(m - 2, -1, -1):
            for k in range(m):
                d[i, k] -= cp[i] * d[i + 1, k]
        for i in range(m):
            gi = G[i, j]
            for k in range(m):
                K[j, i, k] = -gi * d[i, k]
            K[j, i, i] += gi
            c[j, i] = g_s * d[m - 1, i]


def transfer_maps(G: np.ndarray, wires: Wires) -> tuple[np.ndarray, np.ndarray]:
    """Forward-read (M, Y) of a tile by block elimination along the rows: the same result
    as :meth:`TileCircuit.effective_maps` (rows driven at column 0, columns sensed at row
    m - 1), needing r_row, r_col and r_sense > 0.

    Each column's line is eliminated in closed form (a tridiagonal solve), leaving an m x m
    conductance block K_j between the row lines at that column; the row-wire chain of blocks
    is then eliminated from the far end (one m x m factorisation per column), and the drive
    propagated back to every column's sense amplifier.  Cost ~3 m^3 n flops in BLAS (dense),
    against ~m nnz(LU) memory-bound flops for the sparse solves.
    """
    import scipy.linalg as sla

    w = wires
    if not (w.r_row > 0 and w.r_col > 0 and w.r_sense > 0):
        raise ValueError("transfer_maps needs r_row, r_col and r_sense > 0")
    G = np.asarray(G, float)
    m, n = G.shape
    g_r, g_c, g_s = 1.0 / w.r_row, 1.0 / w.r_col, 1.0 / w.r_sense
    g_d = 1.0 / w.r_driver if w.r_driver > 0 else None
    K = np.empty((n, m, m))
    c = np.empty((n, m))
    _column_blocks(np.ascontiguousarray(G), g_c, g_s, K, c)
    eye = np.eye(m)
    first = 0 if g_d is not None else 1                   # r_driver = 0: u_0 = V is fixed
    if n == 1 and g_d is None:
        return c.copy(), K[0].copy()
    # backward elimination: S_j u_j = g_r u_{j-1}  (j > first), S_first u_first = rhs
    Sinv = np.empty((n, m, m))
    nxt = None
    diag = np.arange(m) * (m + 1)
    for j in range(n - 1, first - 1, -1):
        S = K[j]                                           # K[j] is not needed again
        add = (g_r if j < n - 1 else 0.0) + (g_r if j > 0 else 0.0) + (g_d if j == 0 else 0.0)
        if j < n - 1:
            nxt *= g_r * g_r
            S -= nxt
        S.ravel()[diag] += add
        nxt = Sinv[j] = sla.inv(S, overwrite_a=True, check_finite=False)
    M = np.empty((n, m))
    if g_d is not None:
        U = g_d * Sinv[0]                                  # u_0 = U V
        Y = g_d * (eye - U)
        M[0] = c[0] @ U
    else:
        U = eye
        M[0] = c[0]
        Y = K[0] + (g_r * eye if n > 1 else 0.0)
    for j in range(1, n):
        U = g_r * (Sinv[j] @ U)
        M[j] = c[j] @ U
        if j == 1 and g_d is None:
            Y = Y - g_r * U
    return M, Y


def transposed_admittance(G: np.ndarray, wires: Wires) -> np.ndarray:
    """Source admittance Yt (n, n) in S of the transposed read (column feet driven behind
    r_driver, rows sensed at their starts behind r_sense): ``tile_maps(G, wires, True)[1]``
    without the sensed-current map, by block elimination along the rows that keeps the n
    column ports, at about the cost of the forward transfer solve (the turned-over array
    costs ~(n / m)^2 times more).  Needs r_row, r_col and r_driver > 0.

    Each column line is eliminated in closed form with its foot behind r_driver, leaving the
    m x m block K_j between the row nodes and the coupling c_j to its port; eliminating the
    row-node blocks from the far end accumulates ``Yt = diag(sum_i c_j) - sum_j H_j^T S_j^-1
    H_j`` with H_j the (m, n) coupling of block j to the ports at its elimination."""
    import scipy.linalg as sla

    w = wires
    if not (w.r_row > 0 and w.r_col > 0 and w.r_driver > 0):
        raise ValueError("transposed_admittance needs r_row, r_col and r_driver > 0")
    G = np.asarray(G, float)
    m, n = G.shape
    g_r = 1.0 / w.r_row
    g_s = 1.0 / w.r_sense if w.r_sense > 0 else None     # None: row starts at ground
    K = np.empty((n, m, m))
    c = np.empty((n, m))
    _column_blocks(np.ascontiguousarray(G), 1.0 / w.r_col, 1.0 / w.r_driver, K, c)
    Q = np.diag(c.sum(axis=1))
    H = np.zeros((m, n))
    diag = np.arange(m) * (m + 1)
    Sinv = None
    for j in range(n - 1, (0 if g_s is not None else 1) - 1, -1):
        S = K[j]
        if j < n - 1:
            S -= (g_r * g_r) * Sinv
        S.ravel()[diag] += ((g_r if j < n - 1 else 0.0) + (g_r if j > 0 else 0.0)
                            + (g_s if j == 0 else 0.0))
        H[:, j] += c[j]
        Sinv = sla.inv(S, overwrite_a=True, check_finite=False)
        X = Sinv @ H[:, j:]
        Q[j:, j:] -= H[:, j:].T @ X
        H[:, j:] = g_r * X
    return Q


def tile_maps(G: np.ndarray, wires: Wires, transposed: bool = False,
              method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(M, Y) of one read direction: sensed-current map M (n_sense, n_src) in A/V and source
    admittance Y (n_src, n_src) in S.

    ``method``: ``sparse`` (:class:`TileCircuit`, any resistances), ``transfer``
    (:func:`transfer_maps`, all of r_row, r_col, r_sense > 0) or ``auto`` (transfer where it
    applies).  A transposed read is the forward read of the array turned over: rows become
    columns with both index orders reversed (so the drivers stay at the row starts and the
    sense amplifiers at the column feet) and the row and column wires swap.
    """
    w = wires
    fast = w.r_row > 0 and w.r_col > 0 and w.r_sense > 0
    if method == "transfer" and not fast:
        raise ValueError("method transfer needs r_row, r_col and r_sense > 0")
    if method == "sparse" or not fast:
        return TileCircuit(G, w, transposed).effective_maps()
    if not transposed:
        return transfer_maps(G, w)
    Gf = np.ascontiguousarray(np.asarray(G, float)[::-1, ::-1].T)
    M, Y = transfer_maps(Gf, Wires(w.r_col, w.r_row, w.r_driver, w.r_sense))
    return np.ascontiguousarray(M[::-1, ::-1]), np.ascontiguousarray(Y[::-1, ::-1])

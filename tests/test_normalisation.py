"""EP normalisation from the actual paths of the settle graph: as beta -> 0 the normalised
EP update tends to the reference twin's gradient (BP for tied feedback, feedback alignment
over the feedback graph for fixed random feedback) on chains with alpha != 1, graded
residual and AGT graphs; with the authors' uniform skip gains it stays O(1) (no 1/beta
growth) and equals the linear response of the fixed point (docs/model.md)."""

import numpy as np
import pytest

import crossbar_ep as cx
from crossbar_ep.model.learners import BPLearner
from crossbar_ep.model.normalisation import path_gains
from crossbar_ep.model.settle import softmax


def _cos(a, b):
    a, b = a.ravel(), b.ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def reference_grads(net, x, y1h, backward="bp", heads=()):
    """Plain NumPy backward pass of the feed-forward twin: ``bp`` along the transposed
    forward projections, ``fa`` along the net's feedback links (fixed matrices, or the tied
    matrix times its forward scale).  heads: (layer, A, weight) label heads added to the
    loss.  Returns name -> ascent direction (mean over the batch)."""
    L, B = net.L, x.shape[0]
    s, _, p = BPLearner(net, None).forward(x)
    e = y1h - p
    delta = {k: np.zeros_like(s[k]) for k in range(1, L + 1)}
    delta[L] += e @ (net.W["Wf"] if backward == "bp" else net.nudge_matrix())
    for layer, A, w in heads:
        delta[layer] += w * (y1h - softmax(s[layer] @ A.T)) @ A
    scale = {q.name: q.scale for q in net.projections}
    for k in range(L, 0, -1):
        delta[k] *= 1.0 - s[k] ** 2
        if backward == "bp":
            for q in net.incoming(k):
                if q.src >= 1:
                    delta[q.src] += q.scale * delta[k] @ net.W[q.name]
        else:
            for f in net.feedbacks:
                if f.src == k:
                    c = scale[f.tied] if f.tied else 1.0
                    delta[f.dst] += c * delta[k] @ net.feedback_matrix(f)
    g = {q.name: q.scale * delta[q.dst].T @ s[q.src] / B for q in net.projections
         if q.dst <= L}
    g["Wf"] = e.T @ s[L] / B
    return g


def _ep(net, x, y1h, T=80, K=80):
    model = cx.ep_learner(net, T=T, K=K, normalised=True, nudge_error="frozen")
    return model.updates(x, y1h)[0]


def _data(n_in=12, n_out=4, B=30, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((B, n_in)), np.eye(n_out)[rng.integers(0, n_out, B)]


def _scaled_up(net, factor=2.0):
    for q in net.projections:          # away from the linear regime
        net.ops[q.name].dense()[...] *= factor
    return net


def _assert_close(g_ep, g_ref, names=None):
    for name in names or g_ref:
        c = _cos(g_ep[name], g_ref[name])
        ratio = np.linalg.norm(g_ep[name]) / np.linalg.norm(g_ref[name])
        assert c > 0.99, (name, c)
        assert 0.9 < ratio < 1.1, (name, ratio)


@pytest.mark.parametrize("alpha", [0.6, 1.5])
def test_chain_with_alpha_matches_bp(alpha):
    """Tied feedback beta W^T against the forward alpha W: hop gain beta / alpha, and the
    projection's own scale alpha (before: off by alpha^-hops)."""
    net = _scaled_up(cx.make_network([12, 9, 8, 7, 4], seed=3, alpha=alpha, beta_i=1e-3,
                                     beta_f=1e-3, dtype="float64"), 1.5)
    x, y1h = _data()
    _assert_close(_ep(net, x, y1h), reference_grads(net, x, y1h, "bp"))


def test_random_feedback_chain_matches_feedback_alignment():
    """Fixed random feedback: the reference is feedback alignment (the fixed matrices replace
    alpha W^T in the backward pass, B_f replaces W_f), not BP."""
    net = _scaled_up(cx.make_network([12, 9, 8, 7, 4], seed=4, alpha=0.8, beta_i=1e-3,
                                     beta_f=1e-3, feedback="random", dtype="float64"))
    x, y1h = _data()
    g = _ep(net, x, y1h)
    _assert_close(g, reference_grads(net, x, y1h, "fa"))
    assert _cos(g["W0"], reference_grads(net, x, y1h, "bp")["W0"]) < 0.9   # FA, not BP


def test_graded_residual_graph_matches_bp():
    net = _scaled_up(cx.make_network([12, 8, 8, 8, 8, 8, 4], seed=5, alpha=0.9, beta_i=1e-2,
                                     beta_f=1e-3, residual=[(1, 4), (2, 5)],
                                     feedback_gain="graded", dtype="float64"))
    x, y1h = _data()
    _assert_close(_ep(net, x, y1h, 120, 120), reference_grads(net, x, y1h, "bp"))


def test_graded_agt_graph_matches_feedback_alignment_over_its_feedback_graph():
    """AGT: trained forward skips carry no error back; the fixed random feedback links
    (adjacent and skips) are the backward graph of the reference."""
    net = _scaled_up(cx.make_network([12, 8, 8, 8, 8, 8, 4], seed=6, beta_i=1e-2,
                                     beta_f=1e-3, feedback="random", residual=[(1, 4), (2, 5)],
                                     random_feedback=[(5, 2), (4, 1)], feedback_gain="graded",
                                     dtype="float64"))
    x, y1h = _data()
    _assert_close(_ep(net, x, y1h, 120, 120), reference_grads(net, x, y1h, "fa"))


def _linear_response(net, free, y1h):
    """ds = (I - D J)^-1 D n at the free fixed point, per sample (dense NumPy)."""
    L = net.L
    sizes = net.sizes[1:L + 1]
    off = np.concatenate([[0], np.cumsum(sizes)])
    N = off[-1]
    J = np.zeros((N, N))
    for q in net.projections:
        if q.src >= 1 and q.dst <= L:
            J[off[q.dst - 1]:off[q.dst], off[q.src - 1]:off[q.src]] += q.scale * net.W[q.name]
    for f in net.feedbacks:
        J[off[f.dst - 1]:off[f.dst], off[f.src - 1]:off[f.src]] += \
            f.scale * net.feedback_matrix(f).T
    n = np.zeros((free.s[1].shape[0], N))
    n[:, off[L - 1]:] = net.beta_f * (y1h - free.p) @ net.nudge_matrix()
    S = np.concatenate(free.s[1:], axis=1)
    ds = np.stack([np.linalg.solve(np.eye(N) - (1 - S[i] ** 2)[:, None] * J,
                                   (1 - S[i] ** 2) * n[i]) for i in range(S.shape[0])])
    return {k: ds[:, off[k - 1]:off[k]] for k in range(1, L + 1)}


def test_uniform_residual_gains_are_bounded_and_equal_the_linear_response():
    """Authors' gains (beta on 4 -> 1): layer 2 hears the nudge at order beta through
    4 -> 1 -> 2 (a forward hop after a feedback hop), not beta^2 through 4 -> 3 -> 2.  The
    normaliser counts that walk: the normalised update does not grow like 1/beta, and
    equals the linear response of the fixed point; its direction is not BP's there."""
    norms = {}
    for beta in (1e-3, 1e-4):
        net = _scaled_up(cx.make_network([12, 8, 8, 8, 8, 4], seed=7, beta_i=beta,
                                         beta_f=1e-3, residual=[(1, 4)], dtype="float64"))
        gains = path_gains(net)
        assert gains[2] == pytest.approx(1e-3 * beta)          # 4 -> 1 -> 2, not beta^2
        x, y1h = _data()
        model = cx.ep_learner(net, T=80, K=80, normalised=True, nudge_error="frozen")
        g, free = model.updates(x, y1h)
        ds = _linear_response(net, free, y1h)
        for q in net.projections:
            if q.dst <= net.L:
                ref = ds[q.dst].T @ free.s[q.src] / (x.shape[0] * model.norm[q.name])
                _assert_close(g, {q.name: ref})
        norms[beta] = {n: np.linalg.norm(v) for n, v in g.items()}
        bp = reference_grads(net, x, y1h, "bp")
        assert _cos(g["W1"], bp["W1"]) < 0.9     # the leading term is not the BP gradient
        _assert_close(g, bp, ["W3", "Wf"])       # layer 4 and the readout: pure paths
    for name, v in norms[1e-3].items():        # before: 797 at beta 1e-3, 7935 at 1e-4
        assert 0.8 < norms[1e-4][name] / v < 1.25, name

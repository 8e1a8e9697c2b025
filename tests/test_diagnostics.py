"""Convergence diagnostics: the Jacobian against finite differences of the map, the FTLE at
the fixed point against log of the spectral radius, and the CLI."""

import numpy as np
from conftest import small_config

from crossbar_ep import cli
from crossbar_ep.config.build import build_network
from crossbar_ep.config.experiment import dump_config
from crossbar_ep.model.diagnostics import coupling_matrix, ftle, jacobian
from crossbar_ep.model.settle import settle_reference


def net_x(**model):
    cfg = small_config(model={"hidden": [7, 6, 5], "beta_i": 0.4, **model})
    rng = np.random.default_rng(3)
    net = build_network(cfg, 20, 4, rng)
    for k in net.b:
        net.b[k][:] = 0.2 * rng.standard_normal(net.b[k].shape)
    return net, rng.random((3, 20))


def flat(s):
    return np.concatenate([a for a in s[1:]], axis=1)


def test_jacobian_equals_finite_differences_of_the_map():
    for model in ({}, {"hidden": [6, 5, 6, 5], "residual": "every-3", "feedback": "random"}):
        net, x = net_x(**model)
        s = settle_reference(net, x, 5)
        J = jacobian(net, x, s, 1)
        sizes = net.sizes[1:net.L + 1]
        off = np.concatenate([[0], np.cumsum(sizes)])
        h = 1e-6
        fd = np.zeros_like(J)
        for c in range(J.shape[1]):
            plus = [a.copy() for a in s]
            minus = [a.copy() for a in s]
            k = int(np.searchsorted(off, c, side="right"))
            plus[k][1, c - off[k - 1]] += h
            minus[k][1, c - off[k - 1]] -= h
            fd[:, c] = (flat(settle_reference(net, x, 1, s_init=plus))[1]
                        - flat(settle_reference(net, x, 1, s_init=minus))[1]) / (2 * h)
        np.testing.assert_allclose(J, fd, atol=1e-7)
        assert coupling_matrix(net).shape == (sum(sizes), sum(sizes))


def test_ftle_at_the_fixed_point_is_log_spectral_radius():
    net, x = net_x()
    for name in net.W:
        net.W[name] *= 1.5
    fixed = settle_reference(net, x, 500)
    radius = np.abs(np.linalg.eigvals(jacobian(net, x, fixed, 0))).max()
    assert radius < 1
    # start on the fixed point: the perturbation grows as J^t
    L = net.L
    s = fixed
    rng = np.random.default_rng(0)
    d = flat([None] + [rng.standard_normal(a.shape) for a in s[1:]])
    J = jacobian(net, x, s, 0)
    v = d[0] / np.linalg.norm(d[0])
    acc = 0.0
    for _ in range(300):
        v = J @ v
        n = np.linalg.norm(v)
        acc += np.log(n)
        v /= n
    np.testing.assert_allclose(acc / 300, np.log(radius), rtol=0.05)
    # the twin-trajectory FTLE from s = 0 over a long horizon approaches the same rate
    lam = ftle(net, x, 300)
    assert lam[0] < 0
    np.testing.assert_allclose(lam[0], np.log(radius), rtol=0.15)
    assert L == 3


def test_diagnose_cli(tmp_path, capsys):
    cfg = small_config()
    path = str(tmp_path / "e.yaml")
    dump_config(cfg, path)
    assert cli.main(["diagnose", path, "--samples", "8", "--jacobian-samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "spectral radius" in out and "Lyapunov" in out and "layer 2" in out

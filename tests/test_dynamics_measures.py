"""The paper's dynamics measures (spectral radius, FTMLE, convergence steps, EP-BP cosines)
against brute-force NumPy written here, and the diagnose-sweep command end to end."""

import csv

import numpy as np
import pytest
import yaml
from conftest import small_config

from crossbar_ep import cli
from crossbar_ep.config.build import build_network
from crossbar_ep.model.diagnostics import jacobian
from crossbar_ep.model.dynamics_measures import (
    cosine,
    input_drive,
    settle_measures,
    spectral_radius,
)
from crossbar_ep.model.settle import preactivations, settle_reference


def net_x(seed=3, **model):
    cfg = small_config(model={"hidden": [7, 6, 5], "beta_i": 0.4, **model})
    rng = np.random.default_rng(seed)
    net = build_network(cfg, 20, 4, rng)
    for k in net.b:
        net.b[k][:] = 0.2 * rng.standard_normal(net.b[k].shape)
    return net, rng.random((5, 20))


TOPOLOGIES = ({}, {"feedback": "random", "bias": True},
              {"hidden": [6, 5, 6, 5], "residual": "every-3", "alpha": 0.7})


@pytest.mark.parametrize("model", TOPOLOGIES)
def test_stacked_map_is_the_free_phase(model):
    """M s + d equals the pre-activations built term by term, and the measured run ends on
    the states of the reference settle."""
    net, x = net_x(**model)
    s = settle_reference(net, x, 4)
    h = preactivations(net, s)
    from crossbar_ep.model.diagnostics import coupling_matrix
    got = np.concatenate(s[1:], axis=1) @ coupling_matrix(net).T + input_drive(net, x)
    np.testing.assert_allclose(got, np.concatenate(h[1:], axis=1), atol=1e-12)
    units = np.arange(sum(net.sizes[1:net.L + 1]))
    m = settle_measures(net, x, 12, 3, record=units)
    ref = settle_reference(net, x, 12)
    np.testing.assert_allclose(m.trajectory[-1], np.concatenate(ref[1:], axis=1)[0],
                               atol=1e-12)


def test_spectral_radius_of_a_hand_built_block_matrix():
    net, _ = net_x(hidden=[4, 3], beta_i=0.3, alpha=0.5)
    W1 = net.W["W1"].astype(float)            # (3, 4): layer 1 -> 2
    M = np.zeros((7, 7))
    M[4:, :4] = 0.5 * W1                      # forward, times alpha
    M[:4, 4:] = 0.3 * W1.T                    # tied feedback, times beta_i
    assert spectral_radius(net) == pytest.approx(np.abs(np.linalg.eigvals(M)).max())
    # with a 2 x 2 chain the eigenvalues are +-sqrt(alpha beta) times W1's singular values
    sv = np.linalg.svd(W1, compute_uv=False).max()
    assert spectral_radius(net) == pytest.approx(np.sqrt(0.5 * 0.3) * sv)


def test_ftmle_is_the_mean_log_growth_of_the_jacobian_products():
    net, x = net_x(feedback="random")
    T = 6
    m = settle_measures(net, x, 30, T, seed=11)
    rng = np.random.default_rng(11)
    N = sum(net.sizes[1:net.L + 1])
    d0 = rng.random((x.shape[0], N))
    for i in range(x.shape[0]):
        d = d0[i] / np.linalg.norm(d0[i])
        s, logs = settle_reference(net, x, 0), []
        for _ in range(T):
            d = jacobian(net, x, s, i) @ d    # J at s_t: rho'(h(s_t)) M
            logs.append(np.log(np.linalg.norm(d)))
            d /= np.linalg.norm(d)
            s = settle_reference(net, x, 1, s_init=s)
        np.testing.assert_allclose(m.log_growth[i], logs, atol=1e-10)
    assert m.ftmle(T) == pytest.approx(np.mean(m.log_growth[:, :T]))


def test_convergence_step_by_brute_force():
    net, x = net_x()
    tol = 1e-5
    m = settle_measures(net, x, 300, 2, tol=tol)
    s, prev, run, want = None, settle_reference(net, x, 0), np.zeros(5, int), np.full(5, -1)
    for t in range(1, 301):
        s = settle_reference(net, x, 1, s_init=prev)
        diff = np.linalg.norm(np.concatenate(s[1:], 1) - np.concatenate(prev[1:], 1), axis=1)
        run = np.where(diff < tol, run + 1, 0)
        want[(run >= 3) & (want < 0)] = t
        prev = s
    assert (want > 3).all()
    np.testing.assert_array_equal(m.conv_step, want)
    assert m.conv_steps_mean() == pytest.approx(want.mean())
    stuck = settle_measures(net, x, want.min() - 1, 2, tol=tol)   # cap below every sample
    assert (stuck.conv_step == -1).all() and np.isnan(stuck.conv_steps_mean())


def test_ep_bp_cosines_tend_to_one_for_small_betas_and_fall_with_random_feedback():
    from crossbar_ep.config.build import make_learner, make_optimizer
    from crossbar_ep.model.dynamics_measures import ep_bp_cosines
    from crossbar_ep.model.learners import one_hot
    out = {}
    for fb in ("symmetric", "random"):
        cfg = small_config(model={"hidden": [12, 10], "beta_i": 0.001, "feedback": fb},
                           training={"beta_f": 0.001, "T": 40, "K": 40})
        net = build_network(cfg, 20, 4, np.random.default_rng(0))
        learner = make_learner(cfg, net, make_optimizer(cfg.training, net.trainable(),
                                                        net.lr))
        x = np.random.default_rng(1).random((30, 20))
        y = one_hot(np.arange(30) % 4, 4, net.dtype)
        out[fb] = ep_bp_cosines(net, learner, x, y)
    assert min(out["symmetric"].values()) > 0.999
    assert out["random"]["Wf"] > 0.999          # the readout sees no feedback
    assert out["random"]["W0"] < 0.9            # random feedback: not the BP direction
    assert cosine(np.ones(3), -np.ones(3)) == pytest.approx(-1.0)
    assert np.isnan(cosine(np.zeros(2), np.ones(2)))


def test_diagnose_sweep_cli_measures_every_point_and_resumes(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"dataset": "synthetic", "synthetic_features": 20,
                                 "synthetic_classes": 4, "synthetic_train": 200,
                                 "synthetic_test": 100},
        "model": {"hidden": [8, 8]},
        "training": {"epochs": 1, "batch_size": 50, "T": 6, "K": 4, "dtype": "float64"}}))
    sweep = tmp_path / "sw.yaml"
    sweep.write_text(yaml.safe_dump({"name": "dyn", "base": "base.yaml",
                                     "grid": {"model.beta_i": [0.01, 2.0]}}))
    out = tmp_path / "out"
    args = ["diagnose-sweep", str(sweep), "--out", str(out), "--samples", "40",
            "--cap-init", "200", "--cap-trained", "300", "--trajectory-units", "2"]
    assert cli.main(args) == 0
    rows = list(csv.DictReader(open(out / "dynamics.csv")))
    assert [(r["model.beta_i"], r["phase"]) for r in rows] == [
        ("0.01", "init"), ("0.01", "trained"), ("2", "init"), ("2", "trained")]
    weak, strong = rows[0], rows[2]
    assert float(weak["spectral_radius"]) < float(strong["spectral_radius"])
    assert float(weak["ftmle"]) < float(strong["ftmle"])
    assert rows[1]["epochs"] == "1" and rows[1]["test_acc_best"] != ""
    assert rows[1]["conv_cap"] == "300" and {"cos_W0", "cos_W1", "cos_Wf"} <= set(rows[0])
    traj = list(csv.DictReader(open(out / "trajectories.csv")))
    assert len(traj) == 2 * 200 + 2 * 300 and {"dnorm", "u0", "u1", "u8", "u9"} <= set(traj[0])
    capsys.readouterr()
    assert cli.main(args) == 0                   # everything done: nothing measured again
    assert "init:" not in capsys.readouterr().err
    assert len(list(csv.DictReader(open(out / "dynamics.csv")))) == 4
    assert cli.main(["diagnose-sweep", str(sweep), "--out", str(out), "--samples", "0"]) == 2


def test_dynamics_figures_draw_from_the_sweep_files(tmp_path):
    from crossbar_ep.plots import dynamics
    rows = []
    for fb in ("symmetric", "random"):
        for ph in ("init", "trained"):
            for b in (0.01, 1.0):
                rows.append({"feedback": fb, "phase": ph, "beta_i": b, "alpha": 1,
                             "hidden": "64x64x64", "residual_p": 0.2, "spectral_radius": b,
                             "ftmle": -1 + b, "conv_steps": 10 / b, "conv_fraction": 1,
                             "cos_W0": 0.9, "cos_W1": 0.8, "cos_Wf": 1.0,
                             "test_acc_best": 0.9 if ph == "trained" else "",
                             "model.beta_i": b, "model.feedback": fb, "step": 1,
                             "dnorm": 0.1, "u0": 0.5})
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for fig in ("fig5", "fig6", "fig4", "figS8", "fig2"):
        png = tmp_path / f"{fig}.png"
        assert dynamics.main([fig, str(path), "-o", str(png)]) == 0
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert dynamics.main(["fig5", str(tmp_path / "none.csv"), "-o", str(png)]) == 2

"""Nodal analysis of a tile with wire resistance against ngspice, hand-derived formulas and
the ideal read; effective matrices against direct solves; reciprocity."""

import numpy as np
import pytest

from crossbar_ep.circuit.nodal import TileCircuit, Wires, ideal_read
from crossbar_ep.circuit.spice import (
    ngspice_available,
    run_ngspice,
    sensed_currents,
    tile_netlist,
)

needs_ngspice = pytest.mark.skipif(not ngspice_available(),
                                   reason="ngspice not installed: apt-get install -y ngspice "
                                          "(.ci/run does this)")


def random_tile(rng, m, n):
    return rng.uniform(1e-6, 25e-6, (m, n))          # 40 kohm .. 1 Mohm devices


@needs_ngspice
@pytest.mark.parametrize("m, n, wires, transposed", [
    (1, 1, Wires(0.0, 0.0, 50.0, 20.0), False),
    (3, 4, Wires(2.0, 3.0, 10.0, 5.0), False),
    (3, 4, Wires(2.0, 3.0, 10.0, 5.0), True),
    (8, 5, Wires(0.0, 4.0, 0.0, 7.0), True),
    (16, 16, Wires(1.0, 0.0, 30.0, 0.0), False),
    (12, 20, Wires(), False),
    (64, 64, Wires(2.5, 2.5, 100.0, 50.0), False),
])
def test_nodal_solver_matches_ngspice(m, n, wires, transposed):
    rng = np.random.default_rng(m * 100 + n)
    G = random_tile(rng, m, n)
    V = rng.uniform(-0.2, 0.2, n if transposed else m)
    ours = TileCircuit(G, wires, transposed).sensed_currents(V)
    ref = sensed_currents(run_ngspice(tile_netlist(G, wires, V, transposed)), ours.size)
    rel = np.abs(ours - ref) / np.abs(ref)
    assert rel.max() <= 1e-6, rel.max()


@pytest.mark.parametrize("transposed", [False, True])
def test_zero_wire_resistance_is_the_ideal_read(transposed):
    rng = np.random.default_rng(1)
    G = random_tile(rng, 9, 13)
    c = TileCircuit(G, Wires(), transposed)
    V = rng.uniform(-0.2, 0.2, (13 if transposed else 9, 5))
    np.testing.assert_allclose(c.sensed_currents(V), ideal_read(G, V, transposed), rtol=1e-12)
    np.testing.assert_allclose(c.effective_matrix(), G if transposed else G.T, rtol=1e-12)


def test_one_by_one_series_circuit():
    G, rd, rs = 2e-5, 300.0, 200.0
    c = TileCircuit(np.array([[G]]), Wires(5.0, 7.0, rd, rs))     # wires: no segments at 1x1
    assert c.sensed_currents(np.array([0.2]))[0] == pytest.approx(0.2 / (rd + 1 / G + rs),
                                                                  rel=1e-12)


def test_two_by_two_hand_formulas():
    G = np.array([[1e-5, 2e-5], [3e-5, 4e-5]])
    V = np.array([0.15, -0.1])
    r = 1e3                                  # exaggerated so the effect is large
    # row wire only: u_i1 = V_i / (1 + r G_i1); columns at virtual ground
    I = TileCircuit(G, Wires(r_row=r)).sensed_currents(V)
    assert I[0] == pytest.approx(G[0, 0] * V[0] + G[1, 0] * V[1], rel=1e-12)
    assert I[1] == pytest.approx(sum(G[i, 1] * V[i] / (1 + r * G[i, 1]) for i in range(2)),
                                 rel=1e-12)
    # column wire only: the far crossing (row 0) sees v_0j = G_0j V_0 / (G_0j + 1 / r)
    I = TileCircuit(G, Wires(r_col=r)).sensed_currents(V)
    for j in range(2):
        assert I[j] == pytest.approx(G[0, j] * V[0] / (1 + r * G[0, j]) + G[1, j] * V[1],
                                     rel=1e-12)


@pytest.mark.parametrize("transposed", [False, True])
def test_effective_matrix_equals_direct_solves(transposed):
    rng = np.random.default_rng(3)
    G = random_tile(rng, 24, 17)
    c = TileCircuit(G, Wires(3.0, 2.0, 40.0, 25.0), transposed)
    M = c.effective_matrix()
    V = rng.uniform(-0.2, 0.2, (17 if transposed else 24, 40))
    np.testing.assert_allclose(M @ V, c.sensed_currents(V), rtol=1e-10, atol=1e-18)
    assert np.abs(M - (G if transposed else G.T)).max() > 1e-3 * G.max()   # IR drop is there


def test_reciprocity_transposed_read_is_the_transpose():
    """With equal driver and sense resistances the network between row starts and column
    feet is reciprocal: the transposed read's matrix is the forward one's transpose."""
    rng = np.random.default_rng(4)
    G = random_tile(rng, 10, 14)
    w = Wires(4.0, 6.0, 30.0, 30.0)
    Mf = TileCircuit(G, w).effective_matrix()
    Mt = TileCircuit(G, w, transposed=True).effective_matrix()
    np.testing.assert_allclose(Mt, Mf.T, rtol=1e-10)


def test_power_equals_source_power():
    rng = np.random.default_rng(5)
    G = random_tile(rng, 6, 9)
    c = TileCircuit(G, Wires(5.0, 5.0, 20.0, 10.0))
    V = rng.uniform(-0.2, 0.2, 6)
    x = c.node_voltages(V)
    I_src = c.L[c.src] @ x                       # current each source pushes into the tile
    assert c.read_power(V) == pytest.approx(float(V @ I_src), rel=1e-10)
    assert c.read_power(V) > 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="r_row: resistance must be finite and >= 0"):
        Wires(r_row=-1.0)
    with pytest.raises(ValueError, match="conductances >= 0"):
        TileCircuit(np.array([[-1e-6]]), Wires())


@needs_ngspice
@pytest.mark.parametrize("transposed, extra", [
    (False, {}), (True, {}),
    (False, {"wires": {"r_wire_row_ohm": 20.0, "r_wire_col_ohm": 30.0, "r_driver_ohm": 100.0,
                       "r_sense_ohm": 100.0, "refresh_every": 3}}),
    (True, {"wires": {"r_wire_row_ohm": 20.0, "r_wire_col_ohm": 30.0, "r_driver_ohm": 200.0,
                      "r_sense_ohm": 50.0}}),
    (False, {"iv": {"law": "sinh", "v0_V": 0.1}}),
    (True, {"iv": {"law": "polynomial", "coeffs": [20.0]}}),
    (False, {"periphery": {"dac_bits": 7, "input_scaling": "abs_max"}})])
def test_netlist_exported_from_a_trained_run_reproduces_simulator_currents(tmp_path,
                                                                             transposed, extra):
    """The simulator's own training reads (IR-drop maps, device I-V law) against ngspice."""
    import os

    from conftest import REPO, small_config

    from crossbar_ep.cli import main
    from crossbar_ep.runs import train
    from crossbar_ep.runs.export import export_tile
    rpu = os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")
    cfg = small_config(training={"optimizer": "sgd", "lr": 0.1, "epochs": 1},
                       crossbar={"enabled": True, "device": rpu, "tile_rows": 16,
                                 "tile_cols": 8, "periphery": {"dac_bits": 7}, **extra})
    d = str(tmp_path / "run")
    train.fit(train.start(cfg, d), progress=False)
    e = export_tile(d, "1", 0, 1, sample=3, transposed=transposed)
    n = e.G.shape[0] if transposed else e.G.shape[1]
    I = sensed_currents(run_ngspice(e.netlist), n)
    got = I if transposed else I[0::2] - I[1::2]
    np.testing.assert_allclose(got, e.expected_A, rtol=1e-6,
                               atol=1e-6 * np.abs(e.expected_A).max())
    assert np.abs(e.expected_A).max() > 1e-8                 # microamp-scale currents
    if "periphery" in extra:    # abs_max: the drive spans the DAC's full scale, 0.2 V
        np.testing.assert_allclose(np.abs(e.V).max(), 0.2, rtol=1e-12)
    out = tmp_path / "w1.cir"
    assert main(["export-netlist", d, "--layer", "1", "--tile", "0", "1", "--input", "3",
                 "-o", str(out)] + (["--transposed"] if transposed else [])) == 0
    assert out.read_text() == e.netlist
    assert main(["export-netlist", d, "--layer", "7", "-o", str(out)]) == 2


@pytest.mark.parametrize("wires", [Wires(3.0, 2.0, 40.0, 25.0), Wires(0.0, 4.0, 0.0, 7.0),
                                   Wires()])
def test_source_admittance_gives_the_read_power(wires):
    rng = np.random.default_rng(11)
    G = rng.uniform(1e-6, 1e-4, (6, 9))
    c = TileCircuit(G, wires)
    M, Y = c.effective_maps()
    np.testing.assert_allclose(M, c.effective_matrix(), rtol=1e-12)
    np.testing.assert_allclose(Y, Y.T, rtol=1e-9, atol=1e-18)
    for _ in range(3):
        V = rng.uniform(-0.3, 0.3, 6)
        np.testing.assert_allclose(V @ Y @ V, c.read_power(V), rtol=1e-9)
    if wires.ideal:   # no wires: each row draws V_i sum_j G_ij
        np.testing.assert_allclose(Y, np.diag(G.sum(axis=1)), rtol=1e-12)


@pytest.mark.parametrize("m, n", [(1, 1), (1, 5), (6, 1), (7, 4), (5, 9), (24, 40)])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("r_driver", [0.0, 25.0])
def test_transfer_solver_equals_sparse_solver(m, n, transposed, r_driver):
    from crossbar_ep.circuit.nodal import tile_maps
    rng = np.random.default_rng(m * 100 + n)
    G = rng.uniform(1e-6, 1e-4, (m, n))
    w = Wires(3.0, 5.0, r_driver, 40.0)
    M1, Y1 = tile_maps(G, w, transposed, method="sparse")
    M2, Y2 = tile_maps(G, w, transposed, method="transfer")
    np.testing.assert_allclose(M2, M1, rtol=1e-9, atol=1e-12 * np.abs(M1).max())
    np.testing.assert_allclose(Y2, Y1, rtol=1e-9, atol=1e-12 * np.abs(Y1).max())


@needs_ngspice
def test_transfer_solver_matches_ngspice_on_a_large_tile():
    from crossbar_ep.circuit.nodal import tile_maps
    rng = np.random.default_rng(21)
    G = rng.uniform(1e-7, 2.5e-5, (64, 64))
    w = Wires(2.5, 2.5, 100.0, 100.0)
    V = rng.uniform(-0.2, 0.2, 64)
    M, _ = tile_maps(G, w, method="transfer")
    ref = sensed_currents(run_ngspice(tile_netlist(G, w, V)), 64)
    np.testing.assert_allclose(M @ V, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


@needs_ngspice
@pytest.mark.parametrize("law", [("sinh", 0.15, ()), ("polynomial", 0.25, (4.0, 20.0))])
@pytest.mark.parametrize("wires, transposed", [(Wires(2.0, 3.0, 30.0, 20.0), False),
                                               (Wires(2.0, 3.0, 30.0, 20.0), True),
                                               (Wires(0.0, 5.0, 0.0, 10.0), False)])
def test_nonlinear_devices_newton_matches_ngspice(law, wires, transposed):
    from crossbar_ep.circuit.iv import IVLaw
    iv = IVLaw(law[0], law[1], law[2])
    rng = np.random.default_rng(9)
    G = rng.uniform(1e-5, 1e-3, (10, 12))
    V = rng.uniform(-0.4, 0.4, 12 if transposed else 10)
    c = TileCircuit(G, wires, transposed)
    ours = c.nonlinear_sensed_currents(V, iv)
    ref = sensed_currents(run_ngspice(tile_netlist(G, wires, V, transposed, iv=iv)), ours.size)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())
    lin = c.sensed_currents(V)
    assert np.abs(ours - lin).max() > 1e-3 * np.abs(lin).max()   # the law matters here


def test_nonlinear_without_wires_is_G_f_of_the_drive():
    from crossbar_ep.circuit.iv import IVLaw
    iv = IVLaw("sinh", 0.2)
    rng = np.random.default_rng(4)
    G = rng.uniform(1e-6, 1e-4, (6, 8))
    V = rng.uniform(-0.3, 0.3, 6)
    c = TileCircuit(G, Wires(0.0, 0.0, 1e-9, 1e-9))
    np.testing.assert_allclose(c.nonlinear_sensed_currents(V, iv), G.T @ iv.f(V), rtol=1e-6)
    x, iters = c.nonlinear_node_voltages(V, iv)
    assert 1 <= iters <= 6                  # quadratic convergence from the linear guess


@needs_ngspice
def test_whole_network_netlist_settles_to_the_free_phase_fixed_point(tmp_path):
    """ngspice's DC operating point of the network netlist (arrays, behavioural tanh neurons)
    equals the fixed point of the simulator's settling loop."""
    import os

    from conftest import REPO, small_config

    from crossbar_ep.circuit.spice_network import network_netlist, states_from_values
    from crossbar_ep.model.settle import settle_reference
    from crossbar_ep.runs import train
    card = os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")
    cfg = small_config(model={"hidden": [6, 5], "bias": True, "beta_i": 0.3},
                       data={"synthetic_features": 8},
                       training={"optimizer": "sgd", "lr": 0.1, "epochs": 1},
                       crossbar={"enabled": True, "device": card})
    run = train.start(cfg, str(tmp_path / "r"))
    train.fit(run, progress=False)
    x = run.data.x_test[:1].astype(float)
    text = network_netlist(run.net, run.learner.pulses.crossbars, x[0])
    kv = 0.2
    got = states_from_values(run_ngspice(text), run.net, kv)
    ref = settle_reference(run.net, x, 300)
    assert np.abs(ref[2] - settle_reference(run.net, x, 299)[2]).max() < 1e-12   # converged
    for k in (1, 2):
        np.testing.assert_allclose(got[k - 1], ref[k][0], atol=1e-6)
        assert np.abs(ref[k][0]).max() > 0.05            # a non-trivial state


def test_network_export_cli_errors(tmp_path, capsys):
    from crossbar_ep.cli import main
    assert main(["export-netlist", str(tmp_path), "-o", str(tmp_path / "a.cir")]) == 2
    assert "--layer" in capsys.readouterr().err

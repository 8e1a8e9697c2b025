"""Read energy, the fits' conventions and drift compensation, each against an independent
reference: read energy with the device I-V law (device sums; ngspice with wires), the exact
transposed read energy with wires, the published fits' up/down convention (closed form, NumPy
loops), the realisable reference-column transposed read (ngspice), drift compensation during
training (closed form), the API guard on nonlinear laws with wires, and ngspice at its default
options."""

import math
import os
import numpy as np
from scipy.linalg import hadamard
import pytest
import yaml
from conftest import REPO, small_config

import crossbar_ep as cx
from crossbar_ep.circuit.ir_drop import WireSettings, physical_tile, transposed_drive
from crossbar_ep.circuit.iv import IVLaw
from crossbar_ep.circuit.nodal import TileCircuit, Wires, transposed_admittance
from crossbar_ep.circuit.spice import (
    ngspice_available,
    run_ngspice,
    sensed_currents,
    tile_netlist,
)
from crossbar_ep.crossbar.array import CrossbarMatrix, Periphery
from crossbar_ep.devices.array import DeviceArray, pulse_reference
from crossbar_ep.devices.card import card_from_dict, load_card
from crossbar_ep.errors import CrossbarEPError
from crossbar_ep.runs import train

ECRAM = os.path.join(REPO, "device_models", "ecram_li_tang2018.yaml")
RERAM = os.path.join(REPO, "device_models", "reram_gong2018_exp.yaml")
needs_ngspice = pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
T_READ = 5e-9


def make(signed="differential", wires=Wires(), iv=IVLaw(), v_read=0.3):
    W = np.random.default_rng(0).uniform(-0.1, 0.1, (13, 21))
    per = Periphery(dac_bits=7, v_read_V=v_read, t_read_s=T_READ)
    return CrossbarMatrix(W, load_card(ECRAM), np.random.default_rng(1), signed=signed,
                          periphery=per, tile_rows=8, tile_cols=5, dtype=np.float64,
                          wires=WireSettings.of(wires), iv=iv)


def tiles(cb):
    gp = cb.pos.conductance()
    gn = None if cb.neg is None else cb.neg.conductance()
    for rt in cb.row_tiles:
        for ct in cb.col_tiles:
            yield rt, ct, physical_tile(gp[ct, rt], None if gn is None else gn[ct, rt],
                                        cb.mapping.g_ref_S)


def volts(cb, v):
    return np.asarray(cb.dac(v), float) * cb.per.v_read_V / cb.per.input_range


def source_power(text, V):
    """Run a tile netlist with ngspice and return the drivers' power sum -V_k I(VIN_k) (W)."""
    names = [f"i(vin{k})" for k in range(V.size)]
    prints = "".join("print " + " ".join(names[s:s + 8]) + "\n" for s in range(0, len(names), 8))
    vals = run_ngspice(text.replace("quit\n", prints + "quit\n"))
    return float(-sum(V[k] * vals[f"i(vin{k})"] for k in range(V.size)))


# ---------------------------------------------------------------- 1. energy with the I-V law
def test_read_energy_uses_the_device_iv_law():
    iv = IVLaw("sinh", 0.15)
    cb, lin = make(iv=iv), make()
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-1, 1, (3, 21)), rng.uniform(-1, 1, (3, 13))
    Vx, Vy = volts(cb, x), volts(cb, y)
    fwd = bwd = 0.0
    for rt, ct, G in tiles(cb):       # device by device: V_dev x G f(V_dev)
        for b in range(3):
            for i in range(G.shape[0]):
                for j in range(G.shape[1]):
                    v = Vx[b, rt][i]
                    fwd += G[i, j] * v * 0.15 * math.sinh(v / 0.15)
            Vp = transposed_drive(Vy[b, ct], "differential")
            for i in range(G.shape[0]):
                for j in range(G.shape[1]):
                    bwd += G[i, j] * Vp[j] * 0.15 * math.sinh(Vp[j] / 0.15)
    assert cb.read_energy(x)[0] == pytest.approx(fwd * T_READ, rel=1e-12)
    assert cb.read_energy(y, transposed=True)[0] == pytest.approx(bwd * T_READ, rel=1e-12)
    # V^2 G (the linear law) under-counts a 0.3 V read with v0 0.15 V
    assert lin.read_energy(x)[0] < 0.95 * cb.read_energy(x)[0]


@needs_ngspice
def test_nonlinear_read_power_with_wires_is_the_drivers_power_in_ngspice():
    iv = IVLaw("sinh", 0.15)
    rng = np.random.default_rng(4)
    G = rng.uniform(1e-7, 25e-6, (6, 9))
    w = Wires(2.0, 3.0, 50.0, 20.0)
    for transposed in (False, True):
        V = rng.uniform(-0.3, 0.3, 9 if transposed else 6)
        P = TileCircuit(G, w, transposed).nonlinear_read_power(V, iv)
        ref = source_power(tile_netlist(G, w, V, transposed, iv=iv), V)
        assert P == pytest.approx(ref, rel=1e-8)
        lin = TileCircuit(G, w, transposed).read_power(V)
        assert abs(P - lin) > 0.02 * lin             # the law matters at 0.3 V


# ---------------------------------------------------------------- 2. transposed energy, wires
@pytest.mark.parametrize("signed", ["differential", "reference"])
def test_transposed_energy_with_equal_terminals_is_the_nodal_power(signed):
    w = Wires(20.0, 30.0, 100.0, 100.0)       # equal terminals: reciprocity for the reads
    cb = make(signed, wires=w)
    y = np.random.default_rng(3).uniform(-1, 1, (2, 13))
    cb.transposed(y)
    assert all(t.lazy_solves == 0 for t in cb.reader.circuits.values())   # reads alone: no extra solve
    Vy = volts(cb, y)
    ref = 0.0
    for rt, ct, G in tiles(cb):
        for b in range(2):
            ref += TileCircuit(G, w, True).read_power(transposed_drive(Vy[b, ct], signed))
    assert cb.read_energy(y, transposed=True)[0] == pytest.approx(ref * T_READ, rel=1e-9)
    assert all(t.lazy_solves == 1 for t in cb.reader.circuits.values())
    # the ideal-wire column sums (a shortcut) over-count: the wires take part of the drive
    ideal = make(signed).read_energy(y, transposed=True)[0]
    assert cb.read_energy(y, transposed=True)[0] < 0.99 * ideal


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (7, 5), (12, 9)])
@pytest.mark.parametrize("r_sense", [0.0, 40.0, 50.0])
def test_transposed_admittance_equals_the_sparse_solve(shape, r_sense):
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    G = rng.uniform(1e-7, 25e-6, shape) * 1e3
    w = Wires(2.0, 3.0, 40.0, r_sense)
    ref = TileCircuit(G, w, True).effective_maps()[1]
    np.testing.assert_allclose(transposed_admittance(G, w), ref, rtol=0,
                               atol=1e-12 * np.abs(ref).max())


# ---------------------------------------------------------------- 3. the fits' convention
def reram_nominal(conventions):
    raw = yaml.safe_load(open(RERAM))
    for k in ("dw_min_dtod", "up_down_dtod", "w_max_dtod", "w_min_dtod", "dw_min_std",
              "write_noise_std"):
        raw["params"][k] = 0.0
    if conventions is None:
        raw.pop("conventions", None)
    else:
        raw["conventions"] = conventions
    return card_from_dict(raw)


def exp_set_train(p, w, n, up_factor):
    """n SET pulses of exp_step in NumPy: dw = dw_min up_factor max(1 - A_up e^(gamma z), 0)."""
    out = []
    for _ in range(n):
        z = 2 * p["a"] * w / (p["w_max"] - p["w_min"]) + p["b"]
        w = min(w + p["dw_min"] * up_factor * max(1 - p["A_up"] * np.exp(p["gamma_up"] * z),
                                                  0.0), p["w_max"])
        out.append(w)
    return np.array(out)


def test_reram_card_uses_the_fits_up_down_convention():
    card = load_card(RERAM)
    assert card.convention("up_down") == "larger_is_dw_min"
    b = card.params["up_down"]
    fit, sym = reram_nominal({"up_down": "larger_is_dw_min"}), reram_nominal(None)
    for c, ratio in ((fit, 1 / (1 - b)), (sym, (1 + b) / (1 - b))):
        arr = DeviceArray(c, (1, 1), np.random.default_rng(0))
        assert arr.dw_up[0] / arr.dw_dn[0] == pytest.approx(ratio, rel=1e-12)
    assert 1 / (1 - b) == pytest.approx(1.3502, abs=1e-4)
    # 200 SET pulses from w = 0: the Numba kernel, the plain step and a NumPy loop agree
    arr = DeviceArray(fit, (1, 1), np.random.default_rng(0), w_init=0.0)
    got = []
    for _ in range(200):
        arr.pulse(np.ones((1, 1), np.int64))
        got.append(arr.w[0])
    ref = exp_set_train(fit.params, 0.0, 200, 1.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)
    np.testing.assert_allclose(pulse_reference(fit, 0.0, 200), ref, rtol=0, atol=1e-13)
    old = exp_set_train(sym.params, 0.0, 200, 1 + b)
    np.testing.assert_allclose(pulse_reference(sym, 0.0, 200), old, rtol=0, atol=1e-13)
    assert (old[-1] - ref[-1]) / fit.params["dw_min"] == pytest.approx(54.1, abs=0.2)


def step_card(model, conventions, **params):
    raw = {"name": "t", "model": model, "source": "test", "g_min_S": 1e-7, "g_max_S": 25e-6,
           "params": {"dw_min": 0.01, "w_min": -1.0, "w_max": 1.0, **params},
           "conventions": conventions}
    return card_from_dict(raw)


def test_pow_step_exponents_follow_the_convention():
    for pud in (0.3, -0.3):
        fit = step_card("pow_step", {"up_down": "larger_is_dw_min"}, pow_gamma=2.0,
                        pow_up_down=pud, up_down=0.2)
        a = DeviceArray(fit, (1, 1), np.random.default_rng(0))
        assert (a.gamma_up[0], a.gamma_dn[0]) == pytest.approx(
            (2.0 * (1 - 0.3), 2.0) if pud < 0 else (2.0, 2.0 * (1 - 0.3)), rel=1e-12)
        assert (a.dw_up[0], a.dw_dn[0]) == pytest.approx((0.01, 0.008), rel=1e-12)
        sym = step_card("pow_step", {}, pow_gamma=2.0, pow_up_down=pud)
        a = DeviceArray(sym, (1, 1), np.random.default_rng(0))
        assert (a.gamma_up[0], a.gamma_dn[0]) == pytest.approx((2 * (1 + pud), 2 * (1 - pud)))
    with pytest.raises(CrossbarEPError, match="conventions.up_down"):
        step_card("pow_step", {"up_down": "fit"})


@pytest.mark.parametrize("bound", ["device", "nominal"])
def test_linear_step_slope_bound(bound):
    card = step_card("linear_step", {"slope_bound": bound}, gamma_up=0.5, gamma_down=0.7,
                     w_max_dtod=0.3, w_min_dtod=0.3)
    arr = DeviceArray(card, (1, 50), np.random.default_rng(3), w_init=0.2)
    w0, n = arr.w.copy(), 40
    for d in (1, -1):
        w = w0.copy()
        arr.w[:] = w0
        for _ in range(n):
            arr.pulse(np.full((1, 50), d))
            hi = 1.0 if bound == "nominal" else arr.wmax
            lo = -1.0 if bound == "nominal" else arr.wmin
            step = (arr.dw_up * np.maximum(1 - 0.5 * w / hi, 0) if d > 0 else
                    -arr.dw_dn * np.maximum(1 - 0.7 * w / lo, 0))
            w = np.clip(w + step, arr.wmin, arr.wmax)
        np.testing.assert_allclose(arr.w, w, rtol=0, atol=1e-13)


@pytest.mark.parametrize("rng_conv", ["card", "device"])
def test_exp_step_range_convention(rng_conv):
    card = step_card("exp_step", {"exp_range": rng_conv}, A_up=-1.18, A_down=-0.08,
                     w_max_dtod=0.3, w_min_dtod=0.3)
    arr = DeviceArray(card, (1, 50), np.random.default_rng(5), w_init=0.0)
    w = arr.w.copy()
    span = (arr.wmax - arr.wmin) if rng_conv == "device" else 2.0
    for _ in range(60):
        arr.pulse(np.ones((1, 50), np.int64))
        z = 2 * (-0.5) * w / span - 0.5
        w = np.clip(w + arr.dw_up * np.maximum(1 + 1.18 * np.exp(5 * z), 0), arr.wmin, arr.wmax)
    np.testing.assert_allclose(arr.w, w, rtol=0, atol=1e-13)


# ---------------------------------------------------------------- 4. reference column
@needs_ngspice
def test_reference_transposed_read_undriven_reference_column_against_ngspice():
    w = Wires(3.0, 5.0, 40.0, 40.0)
    cb = make("reference", wires=w)
    y = np.random.default_rng(6).uniform(-1, 1, (1, 13))
    Vy = volts(cb, y)[0]
    ref = np.zeros(cb.n_in)
    for rt, ct, G in tiles(cb):
        Vp = transposed_drive(Vy[ct], "reference")
        assert np.max(np.abs(Vp)) <= cb.per.v_read_V       # no -sum V on the reference
        I = sensed_currents(run_ngspice(tile_netlist(G, w, Vp, True)), G.shape[0])
        ref[rt] += I - cb.mapping.g_ref_S * Vy[ct].sum()    # subtracted in the periphery
    np.testing.assert_allclose(cb.transposed(y)[0] * cb.current_factor(), ref, rtol=1e-9,
                               atol=1e-12 * np.abs(ref).max())


def test_reference_transposed_read_ideal_wires_is_the_weight_product():
    cb = make("reference")
    y = np.random.default_rng(7).uniform(-1, 1, (3, 13))
    np.testing.assert_allclose(cb.transposed(y), np.asarray(cb.dac(y)) @ cb.W_eff,
                               rtol=1e-12)


# ---------------------------------------------------------------- 5. drift compensation
def drift_cardfile(tmp_path, nu_std):
    raw = {"name": "drifting", "model": "constant_step", "source": "test", "g_min_S": 1e-7,
           "g_max_S": 25e-6, "params": {"dw_min": 0.01, "w_min": -1.0, "w_max": 1.0},
           "drift": {"nu_mean": 0.1, "nu_std": nu_std, "t0_s": 20.0}}
    path = tmp_path / "drift.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("mode", ["none", "global", "column"])
def test_drift_during_training_follows_the_power_law_and_compensation(tmp_path, mode):
    nu_std = 0.0 if mode == "global" else 0.03
    cfg = small_config(crossbar={"enabled": True, "device": drift_cardfile(tmp_path, nu_std),
                                 "layers": ["W1"], "update": {"lr": 0.0},
                                 "time_per_batch_s": 100.0, "drift_compensation": mode})
    run = train.start(cfg, str(tmp_path / "run"))
    cb = run.learner.pulses.crossbars["W1"]
    g0p, g0n, W0 = cb.pos.conductance().copy(), cb.neg.conductance().copy(), cb.W_eff.copy()
    for _ in range(4):                               # no writes: only time passes
        run.learner.train_batch(run.data.x_train[:50], run.data.y_train[:50])
    t = 400.0
    for dev, g0 in ((cb.pos, g0p), (cb.neg, g0n)):   # G(t) = G0 ((t + t0) / t0) ^ -nu
        nu = np.abs(0.1 + nu_std * dev.nu_xi).reshape(g0.shape)
        np.testing.assert_allclose(dev.conductance(), g0 * ((t + 20.0) / 20.0) ** -nu,
                                   rtol=1e-12)
    gp, gn = cb.pos.conductance(), cb.neg.conductance()
    span = cb.card.g_max_S - cb.card.g_min_S
    raw = cb.scale * (gp - gn) / span
    # the calibration reads: 16 +-1 Walsh-Hadamard rows (not the constant one), recorded at
    # programming and now, summed |output| per line
    R = hadamard(32)[1:17, :cb.n_in].astype(float)
    c0 = np.abs(R @ (cb.scale * (g0p - g0n) / span).T).sum(axis=0)
    c = np.abs(R @ raw.T).sum(axis=0)
    if mode == "none":
        expected = raw
    elif mode == "global":
        expected = raw * c0.sum() / c.sum()
        np.testing.assert_allclose(expected, W0, rtol=1e-9, atol=1e-12)   # one nu: exact
    else:
        expected = raw * (c0 / c)[:, None]
    np.testing.assert_allclose(cb.W_eff, expected, rtol=1e-6, atol=1e-9)
    err = np.linalg.norm(cb.W_eff - W0) / np.linalg.norm(W0)
    err_raw = np.linalg.norm(raw - W0) / np.linalg.norm(W0)      # 0.31 here
    if mode == "column":     # the mean decay undone; the spread of nu (0.03) is left
        assert err < 0.8 * err_raw, (err, err_raw)


# ---------------------------------------------------------------- 6. API guard
def test_api_rejects_a_nonlinear_law_with_wires():
    net = cx.make_network([6, 5, 3, 2])
    with pytest.raises(CrossbarEPError, match="wire resistance"):
        cx.attach_crossbar(net, "W1", ECRAM, iv=IVLaw("sinh", 0.2),
                        wires=WireSettings(r_wire_row_ohm=1.0))
    with pytest.raises(CrossbarEPError, match="differential"):
        cx.attach_crossbar(net, "W1", ECRAM, iv=IVLaw("sinh", 0.2), signed="reference")
    cx.attach_crossbar(net, "W1", ECRAM, iv=IVLaw("sinh", 0.2))         # ideal wires: fine
    cx.attach_crossbar(net, "W0", ECRAM, wires=WireSettings(r_wire_row_ohm=1.0))


# ---------------------------------------------------------------- 7. ngspice options
@needs_ngspice
def test_ngspice_default_options_agree_without_gmin():
    rng = np.random.default_rng(8)
    G = rng.uniform(1e-7, 25e-6, (12, 16))
    w = Wires(2.5, 2.5, 100.0, 100.0)
    V = rng.uniform(-0.2, 0.2, 12)
    text = tile_netlist(G, w, V)
    opts = next(ln for ln in text.splitlines() if ln.startswith(".options"))
    I = sensed_currents(run_ngspice(text.replace(opts + "\n", "")), 16)
    ref = TileCircuit(G, w).sensed_currents(V)
    assert np.max(np.abs(I - ref)) / np.max(np.abs(ref)) < 1e-9


def test_transposed_admittance_is_re_solved_every_energy_refresh_every_exact_solves():
    from crossbar_ep.circuit.ir_drop import TileIRDrop
    w = Wires(2.0, 3.0, 40.0, 40.0)
    ir = TileIRDrop(WireSettings(2.0, 3.0, 40.0, 40.0, 1, 2), "differential", 1.0)
    rng = np.random.default_rng(9)
    G0 = rng.uniform(1e-7, 25e-6, (5, 6))
    solved = []
    for k in range(4):
        G = G0 * (1 + 0.05 * k)
        ir.maps(G, force_exact=True)
        Yf, Yt = ir.admittances(G)
        solved.append(ir.lazy_solves)
        G_at = G0 * (1 + 0.05 * (k - k % 2))              # solved at every 2nd exact solve
        first = TileCircuit(G_at, w, True).effective_maps()[1] + np.diag((G - G_at).sum(axis=0))
        np.testing.assert_allclose(Yt, first, rtol=1e-10, atol=1e-18)
    assert solved == [1, 1, 2, 2]

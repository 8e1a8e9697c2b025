"""Netlist safety: hostile device cards and run paths cannot inject lines (a ``.control`` block with
``shell``) into exported netlists; cards are checked when loaded; validate loads the card;
export-netlist -o and the device commands fail with clear errors, never a traceback."""

import dataclasses
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
import yaml
from conftest import REPO

from crossbar_ep.circuit.nodal import Wires
from crossbar_ep.circuit.spice import netlist_text, tile_netlist
from crossbar_ep.cli import main
from crossbar_ep.devices.card import MAX_STATES, load_card
from crossbar_ep.errors import ConfigError, CrossbarEPError

RPU = os.path.join(REPO, "device_models", "rpu_gokmen2016.yaml")


def hostile(marker):
    """Text that, copied raw into a netlist, runs ``touch marker`` under ngspice -b."""
    return f"x\n.control\nshell touch {marker}\n.endc\r\n.end\u2028.include /etc/passwd"


def assert_no_injection(text, marker_name):
    """At most the tool's own .control block, no shell line, the hostile text only inside
    comment lines, no line break but '\\n', plain ASCII."""
    text.encode("ascii")
    lines = text.split("\n")
    assert text.splitlines() == (lines[:-1] if lines[-1] == "" else lines)
    low = [ln.strip().lower() for ln in lines]
    assert sum(ln.startswith(".control") for ln in low) <= 1
    if ".control" in low:
        assert low[low.index(".control") + 1] == "set numdgt=15"     # the tool's own block
    assert not any(ln.startswith("shell") for ln in low)
    assert not any(ln.startswith(".include") for ln in low)
    for ln in lines:
        if marker_name in ln or ".include" in ln:
            assert ln.startswith("* ")


def run_ngspice_on(path, cwd, marker):
    if shutil.which("ngspice") is None:
        return
    subprocess.run(["ngspice", "-b", str(path)], cwd=str(cwd), capture_output=True,
                   timeout=120)
    assert not os.path.exists(marker)


def write_card(path, **changes):
    with open(RPU) as fh:
        raw = yaml.safe_load(fh)
    raw.update(changes)
    with open(path, "w") as fh:
        yaml.safe_dump(raw, fh)
    return str(path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained 8-6-5-4 crossbar run in a directory whose name holds a newline and a
    .control block (when the file system allows it)."""
    from conftest import small_config

    from crossbar_ep.runs import train
    base = tmp_path_factory.mktemp("sec")
    card = write_card(base / "card.yaml")
    cfg = small_config(model={"hidden": [6, 5], "beta_i": 0.3},
                       data={"synthetic_features": 8, "synthetic_train": 100,
                             "synthetic_test": 20},
                       training={"optimizer": "sgd", "lr": 0.1, "epochs": 1},
                       crossbar={"enabled": True, "device": card})
    name = "run\n.control\nshell touch pwned_by_path\n.endc\n"
    try:
        os.makedirs(base / name)
        os.rmdir(base / name)
    except OSError:
        name = "run"
    d = str(base / name)
    train.fit(train.start(cfg, d), progress=False)
    return base, d, card


@pytest.mark.parametrize("key", ["name", "source", "description"])
@pytest.mark.parametrize("char", ["\n", "\r", "\0", "\t", "\x1b", "\x85", "\u2028"])
def test_card_with_control_characters_is_rejected_at_load(tmp_path, key, char):
    path = write_card(tmp_path / "c.yaml", **{key: f"ok{char}.control"})
    with pytest.raises(ConfigError) as exc:
        load_card(path)
    assert str(path) in str(exc.value)
    assert f"{key}: contains the control character" in str(exc.value)


def test_control_characters_in_nested_values_and_keys_are_rejected(tmp_path):
    path = write_card(tmp_path / "d.yaml", drift={"nu_model": "pcm\n.control"})
    with pytest.raises(ConfigError, match="drift.nu_model: contains the control"):
        load_card(path)
    path = write_card(tmp_path / "k.yaml", **{"na\nme": "x"})
    with pytest.raises(ConfigError, match="control character"):
        load_card(path)


def test_netlist_text_escapes_every_line_break():
    s = netlist_text("a\nb\rc\0d\x85e\u2028f\tg\u00e9")
    assert s == "a\\nb\\rc\\x00d\\x85e\\u2028f\\tg\\xe9"
    assert netlist_text(".control shell", ident=True) == "_control_shell"


def test_tile_writer_escapes_hostile_title_and_comments(tmp_path):
    marker = tmp_path / "pwned_by_tile"
    G = np.full((2, 2), 1e-5)
    text = tile_netlist(G, Wires(), np.array([0.1, -0.1]), title=hostile(marker),
                        comments=[hostile(marker), ".control"])
    assert_no_injection(text, "pwned_by_tile")
    f = tmp_path / "t.cir"
    f.write_text(text)
    run_ngspice_on(f, tmp_path, marker)


def test_export_with_hostile_card_object_and_run_path(tiny_run, tmp_path, monkeypatch,
                                                       capsys):
    """A card built around the load-time check (programmatically) still cannot inject lines,
    through the tile export, the network export and --run-ngspice."""
    from crossbar_ep.config import build as backend  # the builder loads the card
    from crossbar_ep.runs.export import export_tile
    base, d, card = tiny_run
    marker = tmp_path / "pwned_by_card"
    real = load_card(card)
    evil = dataclasses.replace(real, name=hostile(marker), source=hostile(marker),
                               description=hostile(marker), path=hostile(marker))
    monkeypatch.setattr(backend, "load_card", lambda *a, **k: evil)
    e = export_tile(d, "1", 0, 0, sample=1)
    assert_no_injection(e.netlist, "pwned_by_card")
    assert_no_injection(e.netlist, "pwned_by_path")
    assert "pwned_by_card" in e.netlist                   # written, but escaped in a comment
    for extra in (["--layer", "1"], ["--network"]):
        out = tmp_path / "x.cir"
        run_ng = ["--run-ngspice"] if shutil.which("ngspice") else []
        assert main(["export-netlist", d, *extra, "-o", str(out), *run_ng]) == 0
        text = out.read_text()
        assert_no_injection(text, "pwned_by_card")
        assert_no_injection(text, "pwned_by_path")
        run_ngspice_on(out, tmp_path, marker)
        assert not (tmp_path / "pwned_by_path").exists()
    capsys.readouterr()


def test_hostile_card_file_fails_the_export_cleanly(tiny_run, tmp_path, capsys):
    base, d, card = tiny_run
    marker = tmp_path / "pwned_by_file"
    saved = open(card).read()
    try:
        write_card(card, name=hostile(marker))
        out = tmp_path / "h.cir"
        assert main(["export-netlist", d, "--layer", "1", "-o", str(out),
                     "--run-ngspice"]) == 2
        err = capsys.readouterr().err
        assert card in err and "name" in err and "control character" in err
        assert "Traceback" not in err and not out.exists() and not marker.exists()
    finally:
        open(card, "w").write(saved)


@pytest.mark.parametrize("where", ["dir", "missing", "file_parent"])
def test_export_out_path_errors(tiny_run, tmp_path, capsys, where):
    base, d, card = tiny_run
    out = {"dir": tmp_path, "missing": tmp_path / "nope" / "a.cir",
           "file_parent": tmp_path / "f.txt" / "a.cir"}[where]
    (tmp_path / "f.txt").write_text("")
    t0 = time.time()
    assert main(["export-netlist", d, "--layer", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: -o ") and str(out) in err
    assert time.time() - t0 < 5                       # fails before resuming the run


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anyway")
def test_export_out_unwritable(tiny_run, tmp_path, capsys):
    base, d, card = tiny_run
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["export-netlist", d, "--layer", "1", "-o", str(ro / "a.cir")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def experiment(tmp_path, device, **crossbar):
    raw = {"name": "v", "data": {"dataset": "synthetic", "synthetic_features": 8},
           "model": {"hidden": [6]}, "training": {"epochs": 1},
           "crossbar": {"enabled": True, "device": str(device), **crossbar}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("card", ["missing", "hostile", "not_a_mapping", "nan"])
def test_validate_loads_the_device_card(tmp_path, capsys, card):
    path = {"missing": tmp_path / "none.yaml",
            "hostile": write_card(tmp_path / "h.yaml", name="a\n.control"),
            "not_a_mapping": tmp_path / "l.yaml", "nan": tmp_path / "n.yaml"}[card]
    (tmp_path / "l.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "n.yaml").write_text(open(RPU).read().replace("dw_min: 0.0016",
                                                              "dw_min: .nan"))
    exp = experiment(tmp_path, path)
    assert main(["validate", exp]) == 2
    err = capsys.readouterr().err
    assert exp in err and str(path) in err and "Traceback" not in err
    assert main(["validate", experiment(tmp_path, RPU)]) == 0


@pytest.mark.parametrize("n", ["0", "-5", "1e12"])
def test_validate_rejects_bad_n_states_override(tmp_path, capsys, n):
    exp = experiment(tmp_path, RPU)
    assert main(["validate", exp, "--set", f"crossbar.device_params.n_states={n}"]) == 2
    assert "n_states" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="n_states"):
        load_card(RPU, {"n_states": float(n)})


HOSTILE_CARDS = {
    "non_utf8": b"name: x\xff\xfe\nmodel: ideal\n",
    "empty": b"",
    "list": b"- a\n- b\n",
    "python_tag": b"!!python/object/apply:os.system ['touch MARKER']\n",
    "python_tag_in_value": b"name: !!python/object/apply:os.system ['touch MARKER']\n",
    "nan": open(RPU, "rb").read().replace(b"dw_min: 0.0016", b"dw_min: .nan"),
    "inf": open(RPU, "rb").read().replace(b"g_max_S: 25.0e-6", b"g_max_S: .inf"),
    "negative": open(RPU, "rb").read().replace(b"dw_min: 0.0016", b"dw_min: -0.1"),
    "huge_states": open(RPU, "rb").read().replace(b"dw_min: 0.0016", b"dw_min: 2.0e-12"),
    "huge_p_max": open(os.path.join(REPO, "device_models", "neurosim_agasi_jo2010.yaml"),
                       "rb").read().replace(b"p_max: 97", b"p_max: 1000000000000"),
    "too_few_states": open(RPU, "rb").read().replace(b"dw_min: 0.0016", b"dw_min: 5.0"),
    "alias_bomb": ("description: [" + ", ".join(
        ['&a0 ["lol"]'] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]"
                           for i in range(1, 30)]) + "]\nmodel: *a29\n").encode(),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_CARDS) + ["directory"])
@pytest.mark.parametrize("cmd", ["info", "plot"])
def test_device_commands_on_hostile_cards(tmp_path, capsys, kind, cmd):
    card = tmp_path / "card.yaml"
    if kind == "directory":
        card.mkdir()
    else:
        card.write_bytes(HOSTILE_CARDS[kind].replace(b"MARKER", str(tmp_path / "m").encode()))
    png = tmp_path / "p.png"
    t0 = time.time()
    assert main(["device", cmd, str(card)] + (["--out", str(png)] if cmd == "plot" else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {card}") and len(err) < 2000
    assert time.time() - t0 < 10
    assert not (tmp_path / "m").exists() and not png.exists()


def test_overrides_on_malformed_cards_give_config_errors(tmp_path):
    """device_params overrides used to crash (AttributeError, TypeError) on broken cards."""
    lst = tmp_path / "l.yaml"
    lst.write_text("- 1\n")
    plist = write_card(tmp_path / "p.yaml", params=[1, 2])
    no_wmin = tmp_path / "w.yaml"
    no_wmin.write_text(open(RPU).read().replace("w_min: -1.0", ""))
    text = write_card(tmp_path / "t.yaml", params={"dw_min": 0.01, "w_min": "low", "w_max": 1,
                                                    "dw_min_dtod": "x"})
    for path in (lst, plist, no_wmin, text):
        for ov in ({"n_states": 10}, {"variation": 2.0}):
            with pytest.raises(ConfigError, match=str(path)):
                load_card(str(path), ov)


def test_n_states_override_bounds():
    card = load_card(RPU, {"n_states": MAX_STATES})
    assert card.n_states == pytest.approx(MAX_STATES)
    for bad in (0, -1, float("nan"), float("inf"), MAX_STATES * 10):
        with pytest.raises(CrossbarEPError, match="n_states"):
            load_card(RPU, {"n_states": bad})


def test_device_plot_argument_bounds(capsys):
    assert main(["device", "plot", RPU, "--devices", "0"]) == 2
    assert main(["device", "plot", RPU, "--pulses", "1000000000"]) == 2
    assert "--pulses" in capsys.readouterr().err


def test_device_plot_shows_card_text_without_parsing_it(tmp_path, capsys):
    """A '$' in a card's name or citation used to crash matplotlib's math parser."""
    card = write_card(tmp_path / "m.yaml", name="$^^^$", source="$\\frac{a$ et al.")
    png = tmp_path / "m.png"
    assert main(["device", "plot", card, "--out", str(png), "--pulses", "30"]) == 0
    assert png.stat().st_size > 0

"""The wheel is the product: built from the repository's files (``pip wheel --no-deps
--no-build-isolation``) and installed into a fresh virtual environment outside the
repository (``--system-site-packages``, so numpy and the other dependencies need no
download), it carries every shipped device card and experiment, lists the cards, resolves
shipped names (experiments, sweep files, cards, and the relative paths inside them), runs a
quickstart by name and the README's Python API example from a temporary folder."""

import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _run(cmd, cwd, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _source_files() -> list:
    """The files a clean checkout has: tracked and new, not ignored (git), or the tree
    without build products when git is unavailable."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode()
        return [f for f in out.split("\0") if f and os.path.isfile(os.path.join(REPO, f))]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "build", "dist", "runs", "__pycache__", ".pytest_cache"}
        found = []
        for dirpath, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")
                       and d != "_shipped"]
            found += [os.path.relpath(os.path.join(dirpath, f), REPO) for f in files]
        return found


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(wheel file, the venv's python, its crossbar-ep script, a work folder)."""
    try:
        import wheel  # noqa: F401  (setuptools before 70.1 builds wheels through it)
    except ImportError:
        import setuptools
        if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (70, 1):
            pytest.fail("building the wheel needs the 'wheel' package: install the test "
                        "extras, pip install -e '.[test]'")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for rel in _source_files():
        dst = src / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), dst)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(root / "dist"), str(src)], cwd=root)
    (whl,) = (root / "dist").glob("crossbar_ep-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
          str(venv)], cwd=root)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    # the environment's own pip (from the system site) installs into the venv
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(whl)],
         cwd=root)
    work = root / "work"
    work.mkdir()
    return whl, python, bindir / "crossbar-ep", work


def test_wheel_carries_every_shipped_card_and_experiment(wheel_env):
    whl = wheel_env[0]
    names = set(zipfile.ZipFile(whl).namelist())
    want = [f for f in _source_files() if f.startswith(("device_models/", "experiments/"))
            and f.endswith(".yaml")]
    assert len(want) > 40
    missing = [f for f in want if f"crossbar_ep/_shipped/{f}" not in names]
    assert not missing, missing


def test_installed_package_is_the_wheel_not_the_checkout(wheel_env):
    _, python, _, work = wheel_env
    out = _run([str(python), "-c", "import crossbar_ep, crossbar_ep.shipped as s; "
                "print(crossbar_ep.__file__); print(s.shipped_dir('device_models'))"],
               cwd=work).stdout.split()
    venv = str(python.parent.parent)
    assert out[0].startswith(venv) and out[1].startswith(venv), out
    assert "_shipped" in out[1]


def test_installed_cli_lists_cards_and_resolves_shipped_names(wheel_env):
    _, _, cli, work = wheel_env
    listing = _run([str(cli), "device", "list"], cwd=work).stdout
    assert re.search(r"ecram_li_tang2018\s+linear_step\s+1000\s+Tang et al", listing)
    n_cards = len([f for f in os.listdir(os.path.join(REPO, "device_models"))
                   if f.endswith(".yaml")])
    assert "rpu_gokmen2016" in listing and f"{n_cards} cards" in listing
    assert "pcm_joshi2020_inference" in listing
    info = _run([str(cli), "device", "info", "rpu_gokmen2016"], cwd=work).stdout
    assert "Gokmen & Vlasov" in info
    # an experiment by name whose card is a relative path inside it, with a card by name
    for args in (["mnist_3hl_crossbar"], ["mnist_3hl_crossbar_rpu"],
                 ["mnist_3hl_crossbar", "--set", "crossbar.device=ideal"],
                 ["wire_resistance"]):            # a sweep whose base is ../ of it
        assert ": OK (" in _run([str(cli), "validate", *args], cwd=work).stdout
    bad = subprocess.run([str(cli), "run", "mnist_3h"], cwd=work, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "did you mean mnist_3hl" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_installed_cli_runs_the_quickstart_by_name(wheel_env):
    _, _, cli, work = wheel_env
    _run([str(cli), "run", "quickstart", "--epochs", "1", "--quiet", "--out", "runs/q",
          "--set", "data.dataset=synthetic", "--set", "data.synthetic_features=784",
          "--set", "data.synthetic_train=600", "--set", "data.synthetic_test=200",
          "--set", "model.hidden=[32,32]"], cwd=work)
    rows = (work / "runs" / "q" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and rows[0].startswith("epoch")     # header and one epoch
    acc = float(rows[1].split(",")[rows[0].split(",").index("test_acc")])
    assert acc > 0.5                                           # 10 classes: chance is 0.1


def test_readme_python_api_example_runs_from_a_temporary_folder(wheel_env):
    _, python, _, work = wheel_env
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    code = re.search(r"```python\n(.*?)```", text.split("## Python API", 1)[1], re.S).group(1)
    (work / "example.py").write_text(code, encoding="utf-8")
    out = _run([str(python), "example.py"], cwd=work).stdout
    assert float(re.search(r"validation accuracy ([\d.]+)%", out).group(1)) > 90.0, out
    assert int(re.search(r"(\d+) pulses on W1", out).group(1)) > 0
    assert (work / "metrics.csv").read_text().count("\n") == 4    # header + 3 epochs

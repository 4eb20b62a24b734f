"""The built wheel installs into a fresh environment and runs from there with all its resources.

The wheel is built from a copy of the checkout and installed with `--no-deps` into a new virtual
environment whose dependencies come from this interpreter's site-packages (a `.pth` line, so
TensorFlow and the rest are not downloaded again); every command runs outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
_NOT_SHIPPED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".build",
                                      ".*_cache", "tests", "docs", "bench", "node_modules")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only the wheel installed (its bin/Scripts folder)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SHIPPED)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                            "-w", str(base / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (base / "dist").glob("medfedchain-*.whl")

    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    scripts = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = scripts / ("python.exe" if os.name == "nt" else "python")
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(site, "medfedchain_test_dependencies.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "--disable-pip-version-check", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return scripts


def _run(venv: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEDFED_HOME", "VIRTUAL_ENV")}
    clean |= {"TF_CPP_MIN_LOG_LEVEL": "3", "QT_QPA_PLATFORM": "offscreen", "PATH": f"{venv}{os.pathsep}"
              f"{os.environ.get('PATH', '')}"} | env
    return subprocess.run(args, cwd=cwd, env=clean, capture_output=True, text=True, timeout=900)


def test_the_installed_command_prints_its_help(venv: Path, tmp_path: Path) -> None:
    result = _run(venv, ["medfedchain", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "simulate" in result.stdout and "consortium" in result.stdout


def test_the_installed_command_runs_a_federation(venv: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = _run(venv, ["medfedchain", "simulate", "--dataset", "breast_cancer", "--hospitals", "3",
                         "--rounds", "1", "--epochs", "1", "--no-ledger", "--home", str(home)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (home / "medfedchain.db").is_file()


CHECK_RESOURCES = textwrap.dedent("""
    import sys
    from pathlib import Path

    import app, core, ledger, main, smpc
    from PySide6.QtWidgets import QApplication

    from app.resources import RESOURCES, icon, stylesheet
    from core.state.db import open_database
    from ledger.contract import load_artifact
    from smpc.transport import loopback

    site = Path(sys.argv[1]).resolve()
    for module in (app, core, ledger, main, smpc):
        assert site in Path(module.__file__).resolve().parents, f"{module.__name__} from {module.__file__}"
    assert site in RESOURCES.resolve().parents, RESOURCES

    qt = QApplication([])
    for name in ("app", "data", "training", "federation", "verification", "ledger", "settings"):
        assert not icon(name).pixmap(32, 32).isNull(), f"icon {name} does not render"
    assert stylesheet().strip(), "no stylesheet"
    samples = RESOURCES / "samples"
    assert (samples / "breast_cancer_wdbc.csv").is_file()
    assert (samples / "lesions_medmnist.npz").is_file()
    assert len(list((samples / "lesions_png").rglob("*.png"))) == 40
    assert len(list((samples / "lesions_dicom").rglob("*.dcm"))) == 20

    artifact = load_artifact()
    assert artifact.abi and artifact.bytecode.startswith("0x")
    db = open_database(Path(sys.argv[2]) / "state.db")  # runs the shipped Alembic migrations
    db.close()
    assert loopback.SOURCE.is_file(), loopback.SOURCE
    print("resources ok")
""")


def test_the_installed_package_finds_its_resources(venv: Path, tmp_path: Path) -> None:
    python = venv / ("python.exe" if os.name == "nt" else "python")
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    result = _run(venv, [str(python), "-c", CHECK_RESOURCES, site, str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resources ok" in result.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("cc") is None,
                    reason="the loopback shim is built on Linux, with a C compiler")
def test_the_installed_loopback_shim_builds_into_the_user_cache(venv: Path, tmp_path: Path) -> None:
    python = venv / ("python.exe" if os.name == "nt" else "python")
    cache = tmp_path / "cache"
    build = "from smpc.transport.loopback import ensure_shim; print(ensure_shim())"
    result = _run(venv, [str(python), "-c", build], tmp_path, XDG_CACHE_HOME=str(cache))
    assert result.returncode == 0, result.stdout + result.stderr
    shim = Path(result.stdout.strip().splitlines()[-1])
    assert shim.is_file() and cache in shim.parents

"""The PyInstaller bundle runs on a machine without Python: every page renders, a federation runs in
the clear and in SMPC, its ledger passes the audit, and the window opens and closes.

The bundle under test is `MEDFED_BUNDLE` (the executable of an unpacked bundle, as the Windows and
macOS CI jobs set it), else the Linux release `dist/medfedchain-*.tar.gz`, built here by
`packaging/linux/build.sh` when it is absent. It runs from a fresh temporary folder with an
environment that has no virtual environment in it (PATH without it, no PYTHONPATH, VIRTUAL_ENV).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 900


def release_archive() -> Path | None:
    found = sorted((ROOT / "dist").glob("medfedchain-*-linux-x86_64.tar.gz"))
    return found[-1] if found else None


def unpack_release(archive: Path, into: Path) -> Path:
    """Unpacks the release into `into`; returns the bundle's executable."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="tar")
    (top,) = into.iterdir()
    return top / "medfedchain" / "medfedchain"


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without any trace of the development install."""
    venv = Path(sys.prefix).resolve()
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep)
            if entry and not Path(entry).resolve().is_relative_to(venv)]
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MEDFED_HOME", "PATH")}
    return env | {"PATH": os.pathsep.join(path), "QT_QPA_PLATFORM": "offscreen", "TF_CPP_MIN_LOG_LEVEL": "3"} | extra


@pytest.fixture(scope="module")
def executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("MEDFED_BUNDLE")
    if given:
        return Path(given)
    archive = release_archive()
    if archive is None:
        if not sys.platform.startswith("linux"):
            pytest.skip("no bundle: build it with PyInstaller and set MEDFED_BUNDLE to its executable")
        if importlib.util.find_spec("PyInstaller") is None:
            pytest.skip("no dist/medfedchain-*.tar.gz and PyInstaller is not installed (the `bundle` extra)")
        built = subprocess.run(["bash", str(ROOT / "packaging" / "linux" / "build.sh")], cwd=ROOT,
                               env=os.environ | {"PYTHON": sys.executable}, capture_output=True, text=True,
                               timeout=3600)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        archive = release_archive()
        assert archive is not None
    return unpack_release(archive, tmp_path_factory.mktemp("unpacked"))


def run(executable: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(executable), *args], cwd=cwd, env=clean_environment(), capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


SIMULATE = ("simulate", "--dataset", "breast_cancer", "--hospitals", "3", "--rounds", "1", "--epochs", "1")


@pytest.fixture(scope="module")
def plain_home(executable: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    run(executable, *SIMULATE, "--home", str(home), "--json", str(home / "report.json"), cwd=home)
    return home


def test_a_plaintext_federation_runs_and_its_ledger_passes_the_audit(executable: Path, plain_home: Path) -> None:
    assert '"final_accuracy"' in (plain_home / "report.json").read_text(encoding="utf-8")

    audit = run(executable, "ledger", "audit", "--home", str(plain_home), cwd=plain_home)

    assert audit.stdout.startswith("ledger audit OK: ") and " 1 rounds compared" in audit.stdout, audit.stdout


def test_a_secure_federation_runs_and_its_ledger_passes_the_audit(executable: Path,
                                                                 tmp_path: Path) -> None:
    report = tmp_path / "report.json"

    run(executable, *SIMULATE, "--secure", "--home", str(tmp_path), "--json", str(report), cwd=tmp_path)
    audit = run(executable, "ledger", "audit", "--home", str(tmp_path), cwd=tmp_path)

    assert '"accepted"' in report.read_text(encoding="utf-8")
    assert audit.stdout.startswith("ledger audit OK: "), audit.stdout


def test_an_evaluation_writes_its_figures_and_report(executable: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"

    run(executable, "evaluate", "--attacks", "scaling", "--defences", "verification", "--hospitals", "3",
        "--rounds", "1", "--epochs", "1", "--home", str(tmp_path), "--out", str(out), cwd=tmp_path)

    assert all(f.read_bytes().startswith(b"\x89PNG") for f in (out / "figures").glob("*.png"))
    assert list((out / "figures").glob("*.png")) and "data:image/png;base64," in (out / "report.html").read_text()


def test_every_page_renders(executable: Path, plain_home: Path) -> None:
    out = plain_home / "shots"

    run(executable, "screenshot", "--out", str(out), "--home", str(plain_home), cwd=plain_home)

    shots = sorted(p.name for p in out.glob("*.png"))
    assert shots == ["01-data.png", "02-training.png", "03-federation.png", "04-verification.png",
                     "05-ledger.png", "06-settings.png"], shots
    assert all((out / name).stat().st_size > 10_000 for name in shots)


def test_the_window_opens_and_closes_cleanly(executable: Path, plain_home: Path) -> None:
    shown = run(executable, "gui", "--quit-after-shown", "--home", str(plain_home), cwd=plain_home)

    assert re.search(r"window shown after \d+\.\d+ s", shown.stdout), shown.stdout
    assert "Traceback" not in shown.stderr, shown.stderr


def test_the_release_installs_its_menu_entry_per_user(executable: Path, tmp_path: Path) -> None:
    if os.environ.get("MEDFED_BUNDLE") or not sys.platform.startswith("linux"):
        pytest.skip("the desktop entry is the Linux release's")
    script = executable.parents[1] / "install-desktop-entry.sh"

    subprocess.run(["bash", str(script)], env=clean_environment(XDG_DATA_HOME=str(tmp_path)), check=True,
                   capture_output=True, timeout=60)

    entry = (tmp_path / "applications" / "medfedchain.desktop").read_text(encoding="utf-8")
    assert f"Exec={executable} gui" in entry
    icon = re.search(r"^Icon=(.+)$", entry, re.MULTILINE)
    assert icon is not None and Path(icon.group(1)).is_file()
    shutil.rmtree(tmp_path / "applications")

"""The start-up check of the system libraries Qt needs on Linux (no Qt involved)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.system_libraries import LIBRARIES, missing_libraries, missing_message

ROOT = Path(__file__).resolve().parents[2]


def _finder(absent: set[str]):
    return lambda name: None if name in absent else f"lib{name}.so"


def test_nothing_is_missing_when_every_library_is_found() -> None:
    assert missing_libraries(_finder(set()), environ={}, platform="linux") == []


def test_a_missing_library_is_named_with_its_debian_and_fedora_packages() -> None:
    missing = missing_libraries(_finder({"EGL", "xcb-cursor"}), environ={}, platform="linux")

    assert [lib.name for lib in missing] == ["EGL", "xcb-cursor"]
    message = missing_message(missing)
    assert "libEGL" in message and "libxcb-cursor" in message
    assert "apt-get install libegl1 libxcb-cursor0" in message
    assert "dnf install libglvnd-egl xcb-util-cursor" in message


def test_the_offscreen_platform_needs_no_x11_library() -> None:
    every = {lib.name for lib in LIBRARIES}

    missing = missing_libraries(_finder(every), environ={"QT_QPA_PLATFORM": "offscreen"}, platform="linux")

    assert {lib.name for lib in missing} == {"EGL", "fontconfig", "xkbcommon"}


def test_other_systems_are_not_checked() -> None:
    every = {lib.name for lib in LIBRARIES}
    assert missing_libraries(_finder(every), environ={}, platform="win32") == []
    assert missing_libraries(_finder(every), environ={}, platform="darwin") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checked on Linux only")
def test_the_gui_command_refuses_to_start_and_names_what_is_missing(tmp_path: Path) -> None:
    # ctypes.util.find_library finds nothing in this child: the message and exit code, no Qt abort.
    code = ("import ctypes.util, sys; ctypes.util.find_library = lambda name: None; import main; "
            f"sys.exit(main.main(['gui', '--home', {str(tmp_path)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "xcb"})

    assert result.returncode == 11, result.stderr
    assert "libEGL" in result.stderr and "sudo apt-get install" in result.stderr

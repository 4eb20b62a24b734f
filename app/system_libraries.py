"""The system libraries Qt needs on Linux and neither the wheel nor the bundle ships, checked at start.

Qt aborts with an obscure plugin error when one is missing; this names it and the package that
provides it. Imports no Qt, so it runs before Qt loads.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SystemLibrary:
    name: str      # as ctypes.util.find_library takes it: "EGL" for libEGL.so.1
    debian: str    # the package that provides it on Debian / Ubuntu
    fedora: str    # and on Fedora / RHEL
    display: bool  # needed only to open a window (not by the offscreen platform)


LIBRARIES = (
    SystemLibrary("EGL", "libegl1", "libglvnd-egl", display=False),
    SystemLibrary("fontconfig", "libfontconfig1", "fontconfig", display=False),
    SystemLibrary("xkbcommon", "libxkbcommon0", "libxkbcommon", display=False),
    SystemLibrary("xkbcommon-x11", "libxkbcommon-x11-0", "libxkbcommon-x11", display=True),
    SystemLibrary("xcb", "libxcb1", "libxcb", display=True),
    SystemLibrary("xcb-cursor", "libxcb-cursor0", "xcb-util-cursor", display=True),
    SystemLibrary("xcb-icccm", "libxcb-icccm4", "xcb-util-wm", display=True),
    SystemLibrary("xcb-keysyms", "libxcb-keysyms1", "xcb-util-keysyms", display=True),
    SystemLibrary("xcb-image", "libxcb-image0", "xcb-util-image", display=True),
    SystemLibrary("xcb-render-util", "libxcb-render-util0", "xcb-util-renderutil", display=True),
    SystemLibrary("xcb-shape", "libxcb-shape0", "libxcb", display=True),
)


def missing_libraries(find: Callable[[str], str | None] = ctypes.util.find_library,
                      environ: Mapping[str, str] = os.environ,
                      platform: str = sys.platform) -> list[SystemLibrary]:
    """The libraries of LIBRARIES that `find` cannot locate; none off Linux. With the offscreen
    (or another non-X11) Qt platform, the X11 ones are not needed."""
    if not platform.startswith("linux"):
        return []
    qpa = environ.get("QT_QPA_PLATFORM", "")
    x11 = qpa in ("", "xcb") or qpa.startswith("xcb")
    return [lib for lib in LIBRARIES if (x11 or not lib.display) and find(lib.name) is None]


def missing_message(missing: list[SystemLibrary]) -> str:
    """What a hospital's IT person reads: the missing libraries and the packages to install."""
    names = ", ".join(f"lib{lib.name}" for lib in missing)
    debian = " ".join(dict.fromkeys(lib.debian for lib in missing))
    fedora = " ".join(dict.fromkeys(lib.fedora for lib in missing))
    return (f"MedFedChain's window needs system libraries that are not installed: {names}.\n"
            f"  Debian/Ubuntu: sudo apt-get install {debian}\n"
            f"  Fedora/RHEL:   sudo dnf install {fedora}\n"
            "Without a display, `medfedchain screenshot --out DIR` and the CLI commands need none of them.")

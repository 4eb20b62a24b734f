"""The icons and stylesheet shipped in the top-level `resources/` folder.

`resources` is a package, so the same lookup finds it in a checkout and in an installed wheel.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path

from PySide6.QtGui import QIcon

log = logging.getLogger(__name__)

# A wheel is installed unpacked, so the package is a folder on disk that Qt can read from.
RESOURCES = Path(str(files("resources")))


def icon(name: str) -> QIcon:
    """The SVG icon `resources/icons/<name>.svg` (an empty icon if it is missing)."""
    path = RESOURCES / "icons" / f"{name}.svg"
    if not path.is_file():
        log.warning("icon %s is missing", path)
        return QIcon()
    return QIcon(str(path))


def stylesheet() -> str:
    """The app's Qt stylesheet, or none if it is missing (the app stays usable unstyled)."""
    path = RESOURCES / "style.qss"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        log.warning("stylesheet %s is missing", path)
        return ""

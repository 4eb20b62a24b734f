"""`render_screenshots` writes one picture per page after running the demo itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from app.screenshots import PAGES, render_screenshots
from core.settings import Settings
from core.state.db import open_database
from core.state.queries import list_federations


@pytest.mark.slow
def test_every_page_is_rendered_after_a_demo_round(settings: Settings, tmp_path: Path) -> None:
    paths = render_screenshots(settings, tmp_path / "shots")

    assert [p.name for p in paths] == [name for _, name in PAGES]
    for path in paths:
        image = QImage(str(path))
        assert (image.width(), image.height()) == (1440, 900)
        colours = {image.pixel(x, y) for x in range(0, 1440, 37) for y in range(0, 900, 29)}
        assert len(colours) > 20, f"{path.name} looks blank"
    with open_database(settings.db_path) as db:
        verifiers = sorted(f.config["verifier"] for f in list_federations(db))
    assert verifiers == ["none", "plaintext"]  # the demo and its unprotected comparison

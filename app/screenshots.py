"""Renders every page of the app to PNG after a demo federation, for the README and reviews.

If the database holds no federation yet, the demo (five hospitals, one label flipper) is run
first, together with its unprotected-FedAvg comparison and one local training run, so each
page shows real recorded results rather than an empty state.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import QSize

from app.application import create_application, create_window
from app.main_window import MainWindow
from app.pages.federation_page import DEMO
from core.progress import ignore_progress
from core.services import datasets
from core.settings import Settings
from core.state.db import open_database
from core.state.queries import list_datasets, list_federations, list_training_runs

log = logging.getLogger(__name__)

SIZE = QSize(1440, 900)
PAGES = (("Data", "01-data.png"), ("Training", "02-training.png"), ("Federation", "03-federation.png"),
         ("Verification", "04-verification.png"), ("Ledger", "05-ledger.png"), ("Settings", "06-settings.png"))


def prepare_demo_state(settings: Settings) -> None:
    """Records the demo federation, its comparison run and a local training run where missing."""
    from core.services.simulation import SimulationConfig, run_simulation
    from core.services.training import (
        TrainingRequest,
        evaluate_federation,
        find_comparison,
        run_comparison,
        train_locally,
    )

    db = open_database(settings.db_path)
    try:
        bundled = next((d for d in list_datasets(db) if d.name == DEMO["dataset"]), None)
        if bundled is None:
            bundled = datasets.load_and_record(db, datasets.LoadRequest(str(DEMO["dataset"]))).view
        if not list_training_runs(db):
            log.info("training a local model for the screenshots")
            train_locally(db, TrainingRequest(dataset_id=bundled.id, epochs=12, batch_size=16))
        protected = [f for f in list_federations(db) if f.config.get("verifier") != "none" and f.rounds_finalized]
        if not protected:
            log.info("running the demo federation for the screenshots")
            report = run_simulation(SimulationConfig(**DEMO), settings, ignore_progress)
            evaluate_federation(db, settings, int(report["federation_id"]))
            protected = [f for f in list_federations(db) if f.id == int(report["federation_id"])]
        if find_comparison(db, protected[0].id) is None:
            log.info("running the unprotected comparison for the screenshots")
            run_comparison(db, settings, protected[0].id)
    finally:
        db.close()


def _settle(window: MainWindow, *, at_least: float = 0.4, timeout: float = 120.0) -> None:
    """Lets the window paint and its background reads finish."""
    app = create_application()
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        app.processEvents()
        if time.monotonic() - start >= at_least and not window.model.is_busy():
            break
        time.sleep(0.05)
    app.processEvents()


def _show_first_rejection(window: MainWindow) -> None:
    """Scrolls the ledger's events to the newest rejected update, the event the demo is about."""
    table = window.ledger.events_table
    for row in range(table.rowCount()):
        if table.item(row, 1).text() == "Decided" and "accepted=False" in table.item(row, 4).text():
            table.selectRow(row)
            table.scrollToItem(table.item(row, 0), table.ScrollHint.PositionAtCenter)
            _settle(window)
            return


def render_screenshots(settings: Settings, out_dir: Path) -> list[Path]:
    """Writes one PNG per page into `out_dir` and returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare_demo_state(settings)
    create_application()
    window = create_window(settings)
    window.resize(SIZE)
    window.show()
    paths: list[Path] = []
    try:
        _settle(window)
        for title, name in PAGES:
            window.show_page(title)
            _settle(window)
            if title == "Federation":  # the protected run, not its unprotected comparison
                rows = [r for r in range(window.federation.runs.rowCount())
                        if window.federation.runs.item(r, 3).text() != "none (unprotected)"]
                if rows:
                    window.federation.runs.selectRow(rows[0])
                    _settle(window)
            if title == "Ledger":
                window.ledger.audit_button.click()
                _settle(window)
                _show_first_rejection(window)
            path = out_dir / name
            if not window.grab().save(str(path)):
                raise OSError(f"Could not write {path}")
            paths.append(path)
    finally:
        window.close()
    return paths

"""Starts the desktop app: the QApplication, the log file, the exception notifier, the window."""

from __future__ import annotations

import logging
import sys
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.main_window import MainWindow
from app.model import AppModel
from app.notifier import NOTIFIER
from app.resources import icon, stylesheet
from core.settings import Settings
from core.state.db import open_database

log = logging.getLogger(__name__)

LOG_FILE = "medfedchain.log"


def create_application(argv: list[str] | None = None) -> QApplication:
    """The running QApplication, created (and styled) if there is none yet."""
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        app = existing
    else:
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName("MedFedChain")
    app.setOrganizationName("MedFedChain")
    app.setStyle("Fusion")
    app.setStyleSheet(stylesheet())
    app.setWindowIcon(icon("app"))
    return app


def create_window(settings: Settings) -> MainWindow:
    """The main window over the settings' database (runs left "running" by a crash are closed)."""
    from core.services.recovery import mark_interrupted_runs

    db = open_database(settings.db_path)
    mark_interrupted_runs(db)
    return MainWindow(AppModel(settings, db))


def _log_to_file(home: Path) -> logging.Handler:
    handler = RotatingFileHandler(home / LOG_FILE, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def seconds_since_process_start() -> float:
    """Wall-clock seconds since this process was created (interpreter and bundle start included)."""
    import psutil

    return time.time() - psutil.Process().create_time()


def run_app(settings: Settings, *, quit_after_shown: bool = False) -> int:
    """Shows the main window until the user closes it; returns the process exit code.

    `quit_after_shown` (the test and benchmark hook of `gui --quit-after-shown`) quits as soon as the
    window has been shown, after printing `window shown after S s` on stdout."""
    handler = _log_to_file(settings.home)
    app = create_application()
    NOTIFIER.install()
    try:
        window = create_window(settings)
        window.show()
        if quit_after_shown:
            QTimer.singleShot(0, lambda: _report_shown_and_quit(app, window))
        return int(app.exec())
    finally:
        NOTIFIER.uninstall()
        logging.getLogger().removeHandler(handler)
        handler.close()


def _report_shown_and_quit(app: QApplication, window: MainWindow) -> None:
    print(f"window shown after {seconds_since_process_start():.2f} s", flush=True)
    window.close()
    app.quit()

"""The application model the pages are handed: settings, the local database and running work.

Pages read the state through `core.state.queries` / `core.services` with `model.db` (each call
its own unit of work) and subscribe to the signals below to refresh when something changed;
nothing a page shows lives only in the page.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

from app.workers import Task, TaskRunner, Work
from core.settings import Settings
from core.state.db import Database, open_database

log = logging.getLogger(__name__)

TRAINING = "training"
FEDERATION = "federation"
LOADING = "loading"
LEDGER = "ledger"
NODE = "node"  # this hospital's node in a real consortium
CHECKING = "consortium check"


class AppModel(QObject):
    """Shared state of one window: what changed is announced, never pushed into widgets."""

    settings_changed = Signal(object)  # Settings
    datasets_changed = Signal()
    training_changed = Signal()  # training runs
    federations_changed = Signal()  # federation runs and their rounds
    evaluations_changed = Signal()
    busy_changed = Signal()
    show_page = Signal(str)  # a page asks the window to bring another page forward

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.db = db or open_database(settings.db_path)
        self.tasks = TaskRunner(self)
        self.tasks.running_changed.connect(self.busy_changed)

    def run(self, name: str, work: Work) -> Task:
        """A task ready to connect to; call `start(task)` once its signals are connected."""
        return Task(name, work)

    def start(self, task: Task) -> Task:
        return self.tasks.start(task)

    def is_busy(self, name: str | None = None) -> bool:
        return self.tasks.is_running(name)

    def set_settings(self, settings: Settings) -> None:
        self.settings = settings
        self.settings_changed.emit(settings)

    def close(self) -> bool:
        """Stops running work (each records how it ended) and closes the database."""
        stopped = self.tasks.stop_all()
        self.db.close()
        return stopped

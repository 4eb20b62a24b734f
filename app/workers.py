"""Runs Qt-free work from `core.services` off the GUI thread, reporting through signals.

A `Task` is a QObject moved to its own QThread: it calls `work(progress, cancel)` there and
emits `progressed` for each `Progress`, then exactly one of `succeeded`, `failed` or
`cancelled`, then `done`. `TaskRunner` keeps the threads alive while they run and stops them
all (cancel, then wait) when the app closes, so no run is left half-written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

from core.errors import Cancelled
from core.progress import CancelToken, Progress, ProgressSink

log = logging.getLogger(__name__)

Work = Callable[[ProgressSink, CancelToken], Any]


class Task(QObject):
    """One unit of long work; connect to its signals before `TaskRunner.start`."""

    progressed = Signal(object)  # core.progress.Progress
    succeeded = Signal(object)  # the work's return value
    failed = Signal(object)  # the exception
    cancelled = Signal()
    done = Signal()

    def __init__(self, name: str, work: Work) -> None:
        super().__init__()
        self.name = name
        self._work = work
        self.cancel_token = CancelToken()

    def cancel(self) -> None:
        """Asks the work to stop at its next step (callable from any thread)."""
        self.cancel_token.cancel()

    def _report(self, event: Progress) -> None:
        self.progressed.emit(event)

    @Slot()
    def run(self) -> None:
        try:
            result = self._work(self._report, self.cancel_token)
        except Cancelled:
            log.info("%s cancelled", self.name)
            self.cancelled.emit()
        except BaseException as exc:  # handed to the page, which shows or escalates it
            log.warning("%s failed: %s", self.name, exc, exc_info=not hasattr(exc, "user_message"))
            self.failed.emit(exc)
        else:
            self.succeeded.emit(result)
        finally:
            # Back to the GUI thread, so the task is deleted there once nothing refers to it.
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())
            self.done.emit()


class TaskRunner(QObject):
    """Starts tasks on threads of their own and knows which are still running."""

    running_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._running: dict[Task, QThread] = {}

    def start(self, task: Task) -> Task:
        thread = QThread()
        thread.setObjectName(task.name)
        task.moveToThread(thread)
        thread.started.connect(task.run)
        # Direct: the worker ends its own thread's loop, even while the GUI thread waits in stop_all.
        task.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        # A bound slot of this (GUI-thread) object, so the cleanup runs on the GUI thread.
        thread.finished.connect(self._thread_finished)
        self._running[task] = thread
        thread.start()
        self.running_changed.emit()
        return task

    @Slot()
    def _thread_finished(self) -> None:
        thread = self.sender()
        for task, running in list(self._running.items()):
            if running is thread:
                del self._running[task]
                running.wait()
                running.deleteLater()
        self.running_changed.emit()

    def is_running(self, name: str | None = None) -> bool:
        return any(name is None or task.name == name for task in self._running)

    def running_names(self) -> list[str]:
        return sorted({task.name for task in self._running})

    def stop_all(self, timeout_ms: int = 120_000) -> bool:
        """Cancels every task and waits for its thread; False if one did not stop in time."""
        for task in list(self._running):
            task.cancel()
        stopped = True
        for task, thread in list(self._running.items()):
            if not thread.wait(timeout_ms):
                log.error("%s did not stop within %d ms", task.name, timeout_ms)
                stopped = False
        return stopped

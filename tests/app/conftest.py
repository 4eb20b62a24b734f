"""Fixtures for the GUI tests: an offscreen Qt, a fresh data directory, the main window, and a
guard that fails any test leaving a QThread running (napari's `_dangling_qthreads` idea)."""

from __future__ import annotations

import os
import traceback
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from PySide6.QtCore import QThread

from app.application import create_application, create_window
from app.main_window import MainWindow
from core.settings import Settings, load_settings

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _dangling_qthreads(monkeypatch: pytest.MonkeyPatch, qapp: object) -> Iterator[None]:
    """Fails the test if a QThread it started is still running when it ends."""
    started: weakref.WeakKeyDictionary[QThread, str] = weakref.WeakKeyDictionary()
    original = QThread.start

    def start(self: QThread, *args: object) -> None:
        started[self] = "".join(traceback.format_stack(limit=6)[:-1])
        original(self, *args)

    monkeypatch.setattr(QThread, "start", start)
    yield
    running = []
    for thread, where in list(started.items()):
        try:
            if thread.isRunning():
                running.append((thread, where))
        except RuntimeError:  # the C++ thread is already deleted: it finished
            continue
    for thread, _ in running:
        thread.quit()
        thread.wait(5000)
    if running:
        places = "\n\n".join(where for _, where in running)
        pytest.fail(f"{len(running)} QThread(s) still running after the test; started at:\n{places}")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home")


@pytest.fixture
def open_window(qtbot: object, settings: Settings) -> Iterator[Callable[[], MainWindow]]:
    """Opens the app's main window on the test's data directory (as often as a test needs),
    reading the settings afresh each time as a restarted app does."""
    windows: list[MainWindow] = []

    def open_() -> MainWindow:
        create_application()
        window = create_window(load_settings(home=settings.home))
        qtbot.addWidget(window)  # type: ignore[attr-defined]
        window.show()
        qtbot.waitExposed(window)  # type: ignore[attr-defined]
        windows.append(window)
        return window

    yield open_
    for window in windows:
        window.close()


@pytest.fixture
def window(open_window: Callable[[], MainWindow]) -> MainWindow:
    return open_window()

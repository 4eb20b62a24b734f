"""The one place unexpected exceptions go: logged, then shown to the user in a dialog.

`install()` hooks `sys.excepthook` and `threading.excepthook` (as napari does), so an error in
a slot, a worker or any other thread reaches the GUI thread through a queued signal instead of
being lost on a console nobody watches. Expected errors (those with a `user_message`) are shown
by the page that caused them; `report_error` is the shared way to do that.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import TracebackType

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

log = logging.getLogger("app")


def user_message(exc: BaseException) -> str | None:
    """The message a domain error carries for users (CoreError, LedgerError, SmpcError), if any."""
    message = getattr(exc, "user_message", None)
    return message if isinstance(message, str) and message else None


def show_message(parent: QWidget | None, title: str, text: str, *, detail: str | None = None,
                 icon: QMessageBox.Icon = QMessageBox.Icon.Warning) -> QMessageBox:
    """A window-modal message that does not block the event loop (work keeps running)."""
    box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("errorDialog" if icon in (QMessageBox.Icon.Warning, QMessageBox.Icon.Critical) else "message")
    if detail:
        box.setDetailedText(detail)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box


def report_error(parent: QWidget | None, title: str, exc: BaseException) -> QMessageBox | None:
    """Shows a domain error's message; anything else is unexpected and goes to the notifier."""
    message = user_message(exc)
    if message is None:
        NOTIFIER.notify(type(exc), exc, exc.__traceback__)
        return None
    log.warning("%s: %s", title, exc)
    return show_message(parent, title, message, detail=getattr(exc, "detail", None))


class ExceptionNotifier(QObject):
    """Receives exceptions from any thread and re-emits them on the GUI thread."""

    exception_raised = Signal(str, str)  # one-line summary, full traceback

    def __init__(self) -> None:
        super().__init__()
        self._previous_sys = sys.excepthook
        self._previous_threading = threading.excepthook
        self._installed = False

    def notify(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log.error("Unexpected error", exc_info=(exc_type, exc, tb))
        summary = f"{exc_type.__name__}: {exc}"
        self.exception_raised.emit(summary, "".join(traceback.format_exception(exc_type, exc, tb)))

    def _threading_hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            self.notify(args.exc_type, args.exc_value, args.exc_traceback)

    def install(self) -> None:
        if self._installed:
            return
        self._previous_sys, self._previous_threading = sys.excepthook, threading.excepthook
        sys.excepthook = self.notify
        threading.excepthook = self._threading_hook
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            sys.excepthook, threading.excepthook = self._previous_sys, self._previous_threading
            self._installed = False


NOTIFIER = ExceptionNotifier()

"""What a person does with the app, as helpers for the GUI tests: click, type, go to a page."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QMessageBox,
    QTableWidget,
    QWidget,
)
from pytestqt.qtbot import QtBot

from app.main_window import MainWindow

LONG = 120_000  # ms: a federation round on two shared cores


def click(qtbot: QtBot, widget: QWidget) -> None:
    assert widget.isEnabled(), f"{widget.objectName() or widget} is disabled"
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)


def go_to(qtbot: QtBot, window: MainWindow, title: str) -> QWidget:
    """Clicks the page's entry in the navigation list and returns the page."""
    nav = window.nav
    row = next(i for i in range(nav.count()) if nav.item(i).text() == title)
    rect = nav.visualItemRect(nav.item(row))
    qtbot.mouseClick(nav.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    page = window.page(title)
    assert window.stack.currentWidget() is page
    return page


def type_into(qtbot: QtBot, widget: QAbstractSpinBox | QLineEdit, text: str) -> None:
    """Selects what the field holds and types `text` over it, as a user would."""
    widget.setFocus()
    qtbot.keyClick(widget, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(widget, text)
    if isinstance(widget, QAbstractSpinBox):
        qtbot.keyClick(widget, Qt.Key.Key_Tab)


def choose(qtbot: QtBot, combo: QComboBox, text: str) -> None:
    """Picks the entry starting with `text` by typing it into the (closed) combo box."""
    combo.setFocus()
    qtbot.keyClicks(combo, text)
    assert combo.currentText().lower().startswith(text.lower()), combo.currentText()


def column(table: QTableWidget, index: int) -> list[str]:
    return [table.item(r, index).text() if table.item(r, index) else "" for r in range(table.rowCount())]


def message_boxes(parent: QWidget) -> list[QMessageBox]:
    """The message boxes open over `parent` (errors are shown without blocking the app)."""
    return [box for box in parent.findChildren(QMessageBox) if box.isVisible()]


def load_bundled(qtbot: QtBot, window: MainWindow) -> None:
    """Loads the bundled breast-cancer set from the Data page and waits for it to be listed."""
    page = go_to(qtbot, window, "Data")
    choose(qtbot, page.builtin, "breast")
    click(qtbot, page.load_builtin)
    qtbot.waitUntil(lambda: "breast_cancer" in column(page.table, 0), timeout=30_000)

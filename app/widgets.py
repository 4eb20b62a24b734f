"""Widgets shared by several pages: evaluation results, plots and small formatting helpers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.state.queries import EvaluationView

pg.setConfigOptions(antialias=True, background="w", foreground="#222")

ACCEPTED = QColor("#2e7d32")
REJECTED = QColor("#c62828")
NEUTRAL = QColor("#546e7a")
SERIES = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a")


def local_time(moment: datetime | None) -> str:
    """A stored UTC time in the user's local time zone, to the minute."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def short_hash(value: str | None, length: int = 12) -> str:
    return "" if not value else f"{value[:length]}…"


def item(text: object, *, align_right: bool = False, tooltip: str | None = None,
         color: QColor | None = None) -> QTableWidgetItem:
    """A read-only table cell."""
    cell = QTableWidgetItem("" if text is None else str(text))
    cell.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    if align_right:
        cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    if tooltip:
        cell.setToolTip(tooltip)
    if color is not None:
        cell.setForeground(color)
    return cell


def read_only_table(columns: Sequence[str], *, stretch_last: bool = True) -> QTableWidget:
    """A table the user reads and selects rows in, but does not edit."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().setVisible(False)
    table.setAlternatingRowColors(True)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(stretch_last)
    return table


def plot(title: str, left: str, bottom: str, *, legend_at_top: bool = True) -> pg.PlotWidget:
    """A plot with labelled axes (plain units, no SI prefix), a grid and a legend in a corner."""
    widget = pg.PlotWidget(title=title)
    widget.setLabel("left", left)
    widget.setLabel("bottom", bottom)
    widget.getAxis("left").enableAutoSIPrefix(False)
    widget.showGrid(x=True, y=True, alpha=0.25)
    widget.addLegend(offset=(-10, 10) if legend_at_top else (-10, -10))
    widget.setMinimumHeight(180)
    widget.setMenuEnabled(False)
    return widget


class EvaluationPanel(QGroupBox):
    """A tested model: accuracy, per-class precision and recall, and the confusion matrix."""

    def __init__(self, title: str = "Test results", parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.summary = QLabel("No tested model yet.")
        self.summary.setObjectName("evaluationSummary")
        self.summary.setWordWrap(True)
        self.per_class = read_only_table(["Class", "Precision", "Recall", "Cases"], stretch_last=False)
        self.per_class.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.per_class.setObjectName("perClassTable")
        self.confusion = QTableWidget(0, 0)
        self.confusion.setObjectName("confusionMatrix")
        self.confusion.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.confusion.setToolTip("Rows: true class. Columns: predicted class.")
        matrix_label = QLabel("Confusion matrix (rows: true class, columns: predicted class)")
        matrix_label.setObjectName("caption")
        self._matrix_label = matrix_label
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.per_class)
        layout.addWidget(matrix_label)
        layout.addWidget(self.confusion)
        layout.addStretch(1)
        self._tables_visible(False)

    def _tables_visible(self, visible: bool) -> None:
        for widget in (self.per_class, self._matrix_label, self.confusion):
            widget.setVisible(visible)

    def set_evaluation(self, evaluation: EvaluationView | None, *, origin: str = "") -> None:
        self.per_class.setRowCount(0)
        self.confusion.clear()
        self.confusion.setRowCount(0)
        self.confusion.setColumnCount(0)
        self._tables_visible(evaluation is not None)
        if evaluation is None:
            self.summary.setText("No tested model yet.")
            return
        cases = sum(sum(row) for row in evaluation.confusion)
        self.summary.setText(
            f"<b>Accuracy {percent(evaluation.accuracy)}</b> on {cases} held-out cases"
            + (f" · {origin}" if origin else "") + f" · tested {local_time(evaluation.created_at)}"
        )
        names = evaluation.class_names
        self.per_class.setRowCount(len(names))
        for row, name in enumerate(names):
            self.per_class.setItem(row, 0, item(name))
            self.per_class.setItem(row, 1, item(percent(evaluation.precision[row]), align_right=True))
            self.per_class.setItem(row, 2, item(percent(evaluation.recall[row]), align_right=True))
            self.per_class.setItem(row, 3, item(sum(evaluation.confusion[row]), align_right=True))
        self.confusion.setRowCount(len(names))
        self.confusion.setColumnCount(len(names))
        self.confusion.setHorizontalHeaderLabels([f"→ {n}" for n in names])
        self.confusion.setVerticalHeaderLabels(list(names))
        peak = max((v for row in evaluation.confusion for v in row), default=0) or 1
        for r, row_values in enumerate(evaluation.confusion):
            for c, value in enumerate(row_values):
                cell = item(value, align_right=True)
                base = ACCEPTED if r == c else REJECTED
                shade = QColor(base)
                shade.setAlpha(int(30 + 150 * value / peak) if value else 0)
                cell.setBackground(shade)
                self.confusion.setItem(r, c, cell)
        self.confusion.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        for table in (self.per_class, self.confusion):
            _fit_height(table)


def _fit_height(table: QTableWidget) -> None:
    """Makes a short table exactly as tall as its rows, so no empty grid is shown."""
    rows = sum(table.rowHeight(r) for r in range(table.rowCount()))
    table.setFixedHeight(rows + table.horizontalHeader().height() + 2 * table.frameWidth() + 2)

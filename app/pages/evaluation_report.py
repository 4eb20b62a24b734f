"""The robustness evaluation's report, opened from the Verification page.

The report is the self-contained HTML file `evaluate` writes (figures embedded), shown here as it
is; picking a results.json whose report is missing or older writes the report first, off the GUI
thread.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.workers import Work
from core.errors import ConfigError
from core.evaluation.report import HTML_NAME as REPORT_FILE
from core.progress import CancelToken, ProgressSink
from core.services.evaluation import RESULTS_FILE


def report_to_open(picked: Path) -> tuple[Path, bool]:
    """The report a picked file or folder stands for, and whether it must be written first
    (a results.json with no report beside it, or one older than the results)."""
    folder = picked if picked.is_dir() else picked.parent
    report, results = folder / REPORT_FILE, folder / RESULTS_FILE
    if picked.is_file() and picked.name != RESULTS_FILE:
        return picked, False
    if results.is_file() and (not report.is_file() or report.stat().st_mtime < results.stat().st_mtime):
        return report, True
    if report.is_file():
        return report, False
    raise ConfigError(f"{picked} holds no evaluation report: pick the report.html or results.json that "
                      "`medfedchain evaluate --out DIR` wrote.")


def write_report_work(results_file: Path) -> Work:
    """The Task work that (re)writes the report of `results_file` and returns its path."""

    def work(progress: ProgressSink, cancel: CancelToken) -> Path:
        from core.evaluation.report import write_report

        cancel.raise_if_cancelled()
        try:
            results = json.loads(results_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{results_file} is not a readable results file.", detail=str(exc)) from exc
        if not isinstance(results, dict) or not isinstance(results.get("cells"), list):
            raise ConfigError(f"{results_file} is not an evaluation's results file (it has no cells).")
        return write_report(results, results_file.parent).html

    return work


class EvaluationReportDialog(QDialog):
    """Shows one report.html; "Open in web browser" hands the same file to the system's browser."""

    def __init__(self, report: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("evaluationReportDialog")
        self.setWindowTitle(f"Evaluation report: {report.parent.name}")
        self.report = report
        try:
            html = report.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"The report {report} cannot be read.", detail=str(exc)) from exc
        self.browser = QTextBrowser(objectName="reportBrowser")
        self.browser.setOpenExternalLinks(False)
        self.browser.setSearchPaths([str(report.parent)])
        self.browser.setHtml(html)
        where = QLabel(f"<small>{report}</small>", objectName="reportPath")
        where.setWordWrap(True)
        self.external = QPushButton("Open in web browser", objectName="openInBrowserButton")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.external, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        self.external.clicked.connect(self._open_externally)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser, 1)
        layout.addWidget(where)
        layout.addWidget(buttons)
        self.resize(1100, 800)

    @Slot()
    def _open_externally(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.report)))

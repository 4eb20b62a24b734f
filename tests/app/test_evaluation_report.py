"""The Verification page opens an evaluation's report: from report.html, or from a results.json
whose report it writes first; a folder without either gets a message, not a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import QUrl
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QFileDialog
from pytestqt.qtbot import QtBot

from app.main_window import MainWindow
from tests.app.gui import click, go_to, message_boxes
from tests.core.evaluation.test_report import make_results


def _pick(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))


def test_picking_results_json_writes_and_shows_the_report(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "eval" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps(make_results()))
    _pick(monkeypatch, results)
    page = go_to(qtbot, window, "Verification")

    click(qtbot, page.open_report)
    qtbot.waitUntil(lambda: page.report_dialog is not None and page.report_dialog.isVisible(), timeout=60_000)

    dialog = page.report_dialog
    assert dialog.report == results.with_name("report.html") and dialog.report.is_file()
    text = dialog.browser.document().toPlainText()
    assert "MedFedChain evaluation report" in text and "Summary" in text
    sources = [f for f in dialog.browser.document().toHtml().split('src="')[1:]]
    assert sources, "the report shows no figure"
    first = QUrl(sources[0].split('"')[0])
    image = dialog.browser.document().resource(QTextDocument.ResourceType.ImageResource, first)
    assert image is not None and image.width() > 200
    qtbot.waitUntil(lambda: page.open_report.isEnabled())
    dialog.close()


def test_picking_report_html_shows_it_as_written(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "report.html"
    report.write_text("<html><body><h1>Robustness of our federation</h1></body></html>")
    _pick(monkeypatch, report)
    page = go_to(qtbot, window, "Verification")

    click(qtbot, page.open_report)

    assert page.report_dialog is not None and page.report_dialog.isVisible()
    assert "Robustness of our federation" in page.report_dialog.browser.toPlainText()
    page.report_dialog.close()


def test_a_folder_without_a_report_gets_a_message(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    _pick(monkeypatch, tmp_path / "results.json")  # not there
    page = go_to(qtbot, window, "Verification")

    click(qtbot, page.open_report)

    (box,) = message_boxes(page)
    assert "holds no evaluation report" in box.text()
    assert page.report_dialog is None
    box.close()

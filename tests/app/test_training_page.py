"""The Training page: train with live curves, cancel, see the test results, and find it all again."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtWidgets import QGroupBox
from pytestqt.qtbot import QtBot

from app.main_window import MainWindow
from app.widgets import EvaluationPanel
from core.state.queries import list_training_runs
from tests.app.gui import click, column, go_to, load_bundled, type_into


def _points(curve: object) -> int:
    x, _ = curve.getData()  # type: ignore[attr-defined]
    return 0 if x is None else len(x)


def _curve_lengths(window: MainWindow) -> dict[str, int]:
    return {key: _points(curve) for key, curve in window.training.curves.items()}


def test_training_draws_live_curves_and_shows_the_tested_model(qtbot: QtBot, window: MainWindow) -> None:
    load_bundled(qtbot, window)
    page = go_to(qtbot, window, "Training")
    type_into(qtbot, page.epochs, "4")
    type_into(qtbot, page.batch_size, "32")
    seen: list[int] = []
    page.curves["loss"].sigPlotChanged.connect(lambda curve: seen.append(_points(curve)))

    click(qtbot, page.train)
    assert not page.train.isEnabled() and page.cancel.isEnabled()
    qtbot.waitUntil(lambda: column(page.runs_table, 4)[:1] == ["completed"], timeout=60_000)

    assert {1, 2, 3, 4} <= set(seen)  # the curve grew epoch by epoch, not at the end
    assert _curve_lengths(window) == {"loss": 4, "val_loss": 4, "accuracy": 4, "val_accuracy": 4}
    assert page.progress.value() == 100
    assert "Accuracy" in page.evaluation.summary.text()
    matrix = page.evaluation.confusion
    assert (matrix.rowCount(), matrix.columnCount()) == (2, 2)
    cases = sum(int(matrix.item(r, c).text()) for r in range(2) for c in range(2))
    assert cases == 114  # the 20% held out of 569
    assert page.evaluation.per_class.item(0, 0).text() == "malignant"
    [run] = list_training_runs(window.model.db)
    assert run.status == "completed" and len(run.history) == 4
    assert run.evaluation is not None and run.evaluation.accuracy > 0.8


def test_cancelling_stops_training_and_records_the_run_as_cancelled(qtbot: QtBot, window: MainWindow) -> None:
    load_bundled(qtbot, window)
    page = go_to(qtbot, window, "Training")
    type_into(qtbot, page.epochs, "300")
    type_into(qtbot, page.batch_size, "4")

    click(qtbot, page.train)
    qtbot.waitUntil(lambda: _curve_lengths(window)["loss"] >= 1, timeout=60_000)
    click(qtbot, page.cancel)
    qtbot.waitUntil(lambda: column(page.runs_table, 4)[:1] == ["cancelled"], timeout=60_000)

    assert page.train.isEnabled() and not page.cancel.isEnabled()
    assert "cancelled" in page.status.text()
    [run] = list_training_runs(window.model.db)
    assert run.status == "cancelled" and 1 <= len(run.history) < 300
    assert run.evaluation is None
    assert _curve_lengths(window)["loss"] == len(run.history)


def test_closing_and_reopening_restores_datasets_runs_and_curves(
    qtbot: QtBot, open_window: Callable[[], MainWindow]
) -> None:
    first = open_window()
    load_bundled(qtbot, first)
    page = go_to(qtbot, first, "Training")
    type_into(qtbot, page.epochs, "3")
    click(qtbot, page.train)
    qtbot.waitUntil(lambda: column(page.runs_table, 4)[:1] == ["completed"], timeout=60_000)
    summary = page.evaluation.summary.text()
    first.close()

    again = open_window()

    assert column(again.data.table, 0) == ["breast_cancer"]
    training = go_to(qtbot, again, "Training")
    assert column(training.runs_table, 4) == ["completed"]
    assert _curve_lengths(again)["val_accuracy"] == 3
    assert training.evaluation.summary.text() == summary
    verification = go_to(qtbot, again, "Verification")
    results = verification.results.findChild(QGroupBox, "results_breast_cancer")
    local = results.findChild(EvaluationPanel, "localResult")
    federated = results.findChild(EvaluationPanel, "federatedResult")
    assert local.summary.text() == summary.replace("run #1 on breast_cancer", "training run #1")
    assert federated.summary.text() == "No tested model yet."


def test_closing_the_window_mid_training_keeps_the_epochs_done(
    qtbot: QtBot, open_window: Callable[[], MainWindow]
) -> None:
    first = open_window()
    load_bundled(qtbot, first)
    page = go_to(qtbot, first, "Training")
    type_into(qtbot, page.epochs, "300")
    type_into(qtbot, page.batch_size, "4")
    click(qtbot, page.train)
    qtbot.waitUntil(lambda: _curve_lengths(first)["loss"] >= 2, timeout=60_000)

    started = time.monotonic()
    first.close()  # waits for the worker to stop and record how the run ended
    assert time.monotonic() - started < 30  # stopped after the current batch, not after a timeout

    again = open_window()
    [run] = list_training_runs(again.model.db)
    assert run.status == "cancelled" and len(run.history) >= 2
    training = go_to(qtbot, again, "Training")
    assert column(training.runs_table, 4) == ["cancelled"]
    assert _curve_lengths(again)["loss"] == len(run.history)

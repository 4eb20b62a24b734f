"""A federation round with one attacking hospital: live participants and timeline, the attacker
rejected on the Verification page, the round's events on the Ledger page, all there after reopening."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import pairwise

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog, QTreeWidgetItem
from pytestqt.qtbot import QtBot

from app.main_window import MainWindow
from tests.app.gui import LONG, choose, click, column, go_to, message_boxes, type_into


def _candidates(window: MainWindow) -> dict[str, str]:
    """Candidate name -> status, as the Verification page's tree shows round 1."""
    tree = window.verification.tree
    round_item: QTreeWidgetItem = tree.topLevelItem(0)
    return {round_item.child(i).text(0): round_item.child(i).text(1) for i in range(round_item.childCount())}


def test_an_attacking_hospital_is_rejected_and_the_round_is_on_the_ledger(
    qtbot: QtBot, open_window: Callable[[], MainWindow], monkeypatch: pytest.MonkeyPatch
) -> None:
    window = open_window()
    page = go_to(qtbot, window, "Federation")
    type_into(qtbot, page.hospitals, "4")
    type_into(qtbot, page.attackers, "1")
    choose(qtbot, page.attack, "label")
    type_into(qtbot, page.rounds, "1")
    type_into(qtbot, page.local_epochs, "3")
    statuses_seen: set[str] = set()
    page.participants.itemChanged.connect(lambda cell: statuses_seen.add(cell.text()))

    ticks: list[float] = []
    heartbeat = QTimer(interval=50)
    heartbeat.timeout.connect(lambda: ticks.append(time.monotonic()))

    click(qtbot, page.start)
    heartbeat.start()
    assert not page.start.isEnabled() and page.cancel.isEnabled()
    assert column(page.participants, 1) == ["honest", "honest", "honest", "attacker (simulated)"]
    qtbot.waitUntil(lambda: "completed" in page.status.text(), timeout=LONG)
    heartbeat.stop()

    longest_freeze = max(b - a for a, b in pairwise(ticks))
    assert longest_freeze < 1.0, f"the window froze for {longest_freeze:.2f} s during the round"

    assert not message_boxes(window)
    assert {"training", "committed", "accepted", "rejected"} <= statuses_seen
    assert column(page.participants, 2) == ["accepted", "accepted", "accepted", "rejected"]
    round_item = page.timeline.topLevelItem(0)
    steps = [round_item.child(i).text(1) for i in range(round_item.childCount())]
    assert round_item.text(1) == "finalized" and steps == ["done"] * 6
    assert page.progress.value() == 100

    go_to(qtbot, window, "Verification")
    assert _candidates(window) == {"Hospital 1": "accepted", "Hospital 2": "accepted", "Hospital 3": "accepted",
                                   "Hospital 4 (attacker)": "rejected"}
    attacker = window.verification.tree.topLevelItem(0).child(3)
    assert attacker.childCount() == 4  # every registered hospital's vote on it
    votes = {attacker.child(i).text(0): attacker.child(i) for i in range(4)}
    assert votes["vote of hospital-1"].toolTip(1).startswith("The round's policy rejects these scores: ")
    honest = window.verification.tree.topLevelItem(0).child(0).child(0)
    assert honest.toolTip(1) == "The round's policy accepts these scores."
    assert "1 rejected" in window.verification.ratio_label.text()
    assert len(window.verification.with_bars.opts["height"]) == 1

    ledger = go_to(qtbot, window, "Ledger")
    qtbot.waitUntil(lambda: ledger.events_table.rowCount() > 0, timeout=LONG)
    events = column(ledger.events_table, 1)
    assert events.count("Decided") == 1 and "RoundFinalized" in events and events.count("Voted") == 4
    decided = events.index("Decided")
    assert "rejected=hospital-4" in ledger.events_table.item(decided, 4).text()
    assert "accepted=hospital-1, hospital-2, hospital-3" in ledger.events_table.item(decided, 4).text()
    attacker_vote = next(r for r in range(len(events))
                         if events[r] == "Voted" and ledger.events_table.item(r, 3).text() == "hospital-4")
    assert "accepted=hospital-4;" in ledger.events_table.item(attacker_vote, 4).text()  # it accepts only itself
    qtbot.waitUntil(ledger.audit_button.isEnabled, timeout=LONG)
    click(qtbot, ledger.audit_button)
    qtbot.waitUntil(lambda: "audit passed" in ledger.audit_result.text(), timeout=LONG)

    ledger.tabs.setCurrentIndex(2)
    choose(qtbot, ledger.recorded_models, "run #")  # the round's global model, as recorded here
    assert len(ledger.hash_edit.text()) == 64
    qtbot.waitUntil(ledger.verify_button.isEnabled, timeout=LONG)
    click(qtbot, ledger.verify_button)
    qtbot.waitUntil(lambda: "is recorded on the ledger" in ledger.verify_result.text(), timeout=LONG)
    global_hash = ledger.hash_edit.text()
    model_file = window.model.settings.blob_dir / global_hash
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(model_file), ""))
    type_into(qtbot, ledger.hash_edit, "")
    click(qtbot, ledger.hash_file)
    assert ledger.hash_edit.text() == global_hash  # the file on disk hashes to what was recorded
    type_into(qtbot, ledger.hash_edit, "ab" * 32)
    click(qtbot, ledger.verify_button)
    qtbot.waitUntil(lambda: "not on the ledger" in ledger.verify_result.text(), timeout=LONG)
    window.close()

    again = open_window()
    go_to(qtbot, again, "Verification")
    assert _candidates(again)["Hospital 4 (attacker)"] == "rejected"
    federation = go_to(qtbot, again, "Federation")
    assert column(federation.runs, 4) == ["completed"]
    assert column(federation.participants, 2) == ["accepted", "accepted", "accepted", "rejected"]
    assert not again.welcome.isVisible()


@pytest.mark.slow
def test_first_start_offers_the_demo_and_ends_on_the_verdicts_with_a_comparison(
    qtbot: QtBot, window: MainWindow
) -> None:
    assert window.welcome.isVisible()

    click(qtbot, window.demo_button)
    qtbot.waitUntil(lambda: window.stack.currentWidget() is window.verification, timeout=2 * LONG)

    statuses = _candidates(window)
    assert statuses.pop("Hospital 5 (attacker)") == "rejected"
    assert set(statuses.values()) == {"accepted"}
    assert window.verification.tree.topLevelItemCount() == 2  # the demo's two rounds
    assert not window.welcome.isVisible()

    qtbot.waitUntil(window.verification.compare.isEnabled, timeout=LONG)  # the run's thread has ended
    click(qtbot, window.verification.compare)
    qtbot.waitUntil(lambda: len(window.verification.without_bars.opts["height"]) == 2, timeout=2 * LONG)
    assert window.verification.without_bars.isVisible()
    assert "unprotected FedAvg" in window.verification.accuracy_legend.text()
    assert "Compared with unprotected run" in window.verification.summary.text()


def test_a_secure_round_verifies_and_aggregates_inside_smpc(qtbot: QtBot, window: MainWindow) -> None:
    page = go_to(qtbot, window, "Federation")
    type_into(qtbot, page.hospitals, "3")
    type_into(qtbot, page.attackers, "1")
    type_into(qtbot, page.rounds, "1")
    type_into(qtbot, page.local_epochs, "2")
    click(qtbot, page.secure)
    assert page.secure.isChecked() and not page.aggregator.isEnabled()

    click(qtbot, page.start)
    qtbot.waitUntil(lambda: "completed" in page.status.text(), timeout=4 * LONG)

    round_item = page.timeline.topLevelItem(0)
    steps = [round_item.child(i).text(0) for i in range(round_item.childCount())]
    assert "Encrypted verification (SMPC)" in steps and "Secure aggregation (SMPC)" in steps
    assert column(page.participants, 2) == ["accepted", "accepted", "rejected"]
    assert column(page.runs, 3) == ["SMPC"]


def test_cancelling_a_federation_keeps_the_finished_rounds(qtbot: QtBot, window: MainWindow) -> None:
    page = go_to(qtbot, window, "Federation")
    type_into(qtbot, page.hospitals, "3")
    type_into(qtbot, page.attackers, "0")
    type_into(qtbot, page.rounds, "5")
    type_into(qtbot, page.local_epochs, "2")

    click(qtbot, page.start)
    qtbot.waitUntil(lambda: page.timeline.topLevelItemCount() >= 1
                    and page.timeline.topLevelItem(0).text(1) == "finalized", timeout=LONG)
    click(qtbot, page.cancel)
    qtbot.waitUntil(lambda: page.start.isEnabled(), timeout=LONG)

    assert "Cancelled" in page.status.text()
    assert column(page.runs, 4) == ["cancelled"]
    finished = int(column(page.runs, 5)[0].split("/")[0])
    assert 1 <= finished < 5
    states = [page.timeline.topLevelItem(i).text(1) for i in range(page.timeline.topLevelItemCount())]
    assert states[:finished] == ["finalized"] * finished and set(states[finished:]) <= {"aborted"}
    assert not message_boxes(window)
    verification = go_to(qtbot, window, "Verification")
    assert verification.tree.topLevelItem(0).text(1) == "finalized"


def test_a_majority_of_attackers_is_warned_of_on_the_page(qtbot: QtBot,
                                                          open_window: Callable[[], MainWindow]) -> None:
    window = open_window()
    page = go_to(qtbot, window, "Federation")
    type_into(qtbot, page.hospitals, "3")
    type_into(qtbot, page.attackers, "2")
    choose(qtbot, page.attack, "label")
    type_into(qtbot, page.rounds, "1")
    type_into(qtbot, page.local_epochs, "1")
    assert page.warnings.isHidden()

    click(qtbot, page.start)
    qtbot.waitUntil(lambda: not page.warnings.isHidden(), timeout=LONG)
    assert "2 of the 3 hospitals are malicious" in page.warnings.text()
    assert "fewer than half" in page.warnings.text()
    assert "Warning: 2 of the 3 hospitals" in page.log.toPlainText()
    click(qtbot, page.cancel)
    qtbot.waitUntil(lambda: page._task is None, timeout=LONG)
    assert page.warnings.text().count("malicious") == 1  # said once


def test_a_minority_of_attackers_runs_without_a_warning(qtbot: QtBot,
                                                        open_window: Callable[[], MainWindow]) -> None:
    window = open_window()
    page = go_to(qtbot, window, "Federation")
    type_into(qtbot, page.hospitals, "3")
    type_into(qtbot, page.attackers, "1")
    type_into(qtbot, page.rounds, "1")
    type_into(qtbot, page.local_epochs, "1")
    click(qtbot, page.start)
    qtbot.waitUntil(lambda: page._task is None, timeout=LONG)
    assert "completed" in page.status.text()
    assert page.warnings.isHidden()

"""The Settings page saves validated settings and creates keystore accounts; unexpected errors
from any thread reach one dialog."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import pytest
from PySide6.QtWidgets import QLineEdit
from pytestqt.qtbot import QtBot

from app.main_window import MainWindow
from app.notifier import NOTIFIER
from core.settings import Settings, load_settings
from tests.app.gui import click, column, go_to, message_boxes, type_into


def test_settings_are_validated_saved_and_shown_again(
    qtbot: QtBot, open_window: Callable[[], MainWindow]
) -> None:
    window = open_window()
    page = go_to(qtbot, window, "Settings")

    type_into(qtbot, page.rpc_url, "ftp://ledger.example.org")
    click(qtbot, page.save)
    [box] = message_boxes(window)
    assert "rpc_url" in box.text() and "http" in box.text()
    assert page.saved.text() == "Not saved."
    box.close()

    type_into(qtbot, page.rpc_url, "http://10.0.0.5:8545")
    type_into(qtbot, page.hospital_name, "St Mary Oncology")
    type_into(qtbot, page.policy["min_cosine"], "-0.5")
    click(qtbot, page.save)

    saved = json.loads(window.model.settings.settings_file.read_text())
    assert saved["rpc_url"] == "http://10.0.0.5:8545" and saved["hospital_name"] == "St Mary Oncology"
    assert saved["policy"]["min_cosine"] == -0.5
    federation = window.federation
    assert federation.configured.isEnabled() and "http://10.0.0.5:8545" in federation.network_note.text()
    window.close()

    again = open_window()
    assert again.settings.rpc_url.text() == "http://10.0.0.5:8545"
    assert again.settings.policy["min_cosine"].value() == -0.5
    assert load_settings(home=again.model.settings.home).hospital_name == "St Mary Oncology"


def test_an_old_settings_file_naming_a_players_file_still_opens_and_is_saved_without_it(
    qtbot: QtBot, open_window: Callable[[], MainWindow], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.settings_file.write_text(json.dumps({"smpc_players": "players.json", "hospital_name": "Old Install"}))

    with caplog.at_level(logging.WARNING, logger="core.settings"):
        window = open_window()
    page = go_to(qtbot, window, "Settings")

    assert page.hospital_name.text() == "Old Install"
    assert any("'smpc_players'" in r.getMessage() and "obsolete" in r.getMessage() for r in caplog.records)
    assert not page.findChildren(QLineEdit, "playersEdit")  # no players field any more
    federation = window.federation
    assert not federation.configured.isEnabled() and "no ledger node" in federation.network_note.text()
    assert "players" not in federation.network_note.text()
    click(qtbot, page.save)
    assert json.loads(settings.settings_file.read_text()) == {"hospital_name": "Old Install"}
    assert not message_boxes(window)


def test_a_keystore_account_is_created_with_the_typed_password(qtbot: QtBot, window: MainWindow) -> None:
    page = go_to(qtbot, window, "Settings")
    type_into(qtbot, page.hospital_name, "St Mary")
    type_into(qtbot, page.password, "correct horse battery")
    type_into(qtbot, page.password_again, "correct horse batter")
    click(qtbot, page.create_account)
    [box] = message_boxes(window)
    assert "differ" in box.text()
    box.close()

    type_into(qtbot, page.password_again, "correct horse battery")
    click(qtbot, page.create_account)
    qtbot.waitUntil(lambda: page.accounts.rowCount() == 1, timeout=30_000)

    assert column(page.accounts, 0) == ["St-Mary"]
    assert column(page.accounts, 1)[0].startswith("0x")
    keyfile = window.model.settings.keystore_dir / "St-Mary.json"
    assert "correct horse" not in keyfile.read_text()  # encrypted, not the password in clear
    assert page.password.text() == ""


def test_an_unexpected_error_in_a_thread_is_shown_in_one_dialog(qtbot: QtBot, window: MainWindow) -> None:
    NOTIFIER.install()
    try:
        worker = threading.Thread(target=lambda: 1 / 0)
        worker.start()
        worker.join()
        qtbot.waitUntil(lambda: bool(message_boxes(window)), timeout=5_000)
    finally:
        NOTIFIER.uninstall()
    [box] = message_boxes(window)
    assert "ZeroDivisionError" in box.text() and "recorded so far are kept" in box.text()
    assert "Traceback" in box.detailedText()

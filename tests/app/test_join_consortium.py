"""The Federation page joins this machine to a real consortium as one of its hospitals.

A consortium is provisioned on anvil as tests/deployment.py does; its coordinator and two other
hospitals run as `main.py` subprocesses. In the test process the app creates this machine's
account (refused as a non-member until the admin adds its address), refuses a tampered file and a
dataset that does not fit, then runs its node until a round is final: the round's commitments,
votes and decisions, this hospital's own votes and scores, and the global accuracy on its own test
data are on the page. Stopping the node leaves no thread behind.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QFileDialog, QTreeWidgetItem
from pytestqt.qtbot import QtBot

from app.main_window import MainWindow
from app.pages.consortium_panel import ConsortiumPanel
from core.federation.channel import RoundTiming
from core.services.consortium import add_hospital
from core.settings import load_settings
from ledger.anvil import free_port
from tests.app.gui import LONG, click, go_to, message_boxes, type_into
from tests.deployment import PASSWORD, ROOT, SAMPLE, LoopbackFederation, split_csv

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

SCREENSHOT_ENV = "MEDFED_SCREENSHOT_DIR"  # set it to keep the page's picture (docs/screenshots)
CHAIN = 60_000  # ms: a check against anvil, with a subprocess or two competing for the cores


def _open(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, button: object, path: Path) -> None:
    """Clicks a button that asks for a file, and picks `path` in the dialog."""
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    click(qtbot, button)  # type: ignore[arg-type]


def _serving(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _round(join: ConsortiumPanel, number: int) -> QTreeWidgetItem | None:
    tree = join.rounds
    for i in range(tree.topLevelItemCount()):
        if tree.topLevelItem(i).text(0) == f"Round {number}":
            return tree.topLevelItem(i)
    return None


def _rows(item: QTreeWidgetItem) -> dict[str, list[str]]:
    return {item.child(i).text(0): [item.child(i).text(c) for c in range(1, 6)] for i in range(item.childCount())}


def test_a_hospital_joins_a_consortium_and_follows_its_round(
    qtbot: QtBot, open_window: Callable[[], MainWindow], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    federation = LoopbackFederation(tmp_path / "consortium", hospitals=2, malicious=0,
                                    timing=RoundTiming(90, 60, 120), epochs=2)
    federation.provision()
    os.environ.pop("MEDFED_KEYSTORE_PASSWORD")  # this hospital types its password into the page
    assert federation.consortium is not None
    own_records = split_csv(SAMPLE, 3, tmp_path / "own")[2]
    try:
        window = open_window()
        page = go_to(qtbot, window, "Federation")
        tabs = page.tabs.tabBar()
        qtbot.mouseClick(tabs, Qt.MouseButton.LeftButton, pos=tabs.tabRect(1).center())
        join: ConsortiumPanel = page.join
        assert page.tabs.currentWidget() is join
        type_into(qtbot, join.rpc_url, federation.rpc_url)

        # No account yet: nothing to check membership with; the page offers to make one.
        _open(qtbot, monkeypatch, join.open_file, federation.consortium)
        assert "no ledger account" in join.membership.text() and join.create_account.isVisible()
        type_into(qtbot, join.password, PASSWORD)
        click(qtbot, join.create_account)
        qtbot.waitUntil(lambda: "0x" in join.account.text(), timeout=CHAIN)
        found = re.search(r"0x[0-9a-fA-F]{40}", join.account.text())
        assert found is not None and not join.create_account.isVisible()
        address = found.group()
        # ... which the chain does not know yet: refused, with the address to send to the admin.
        qtbot.waitUntil(lambda: "Not joined" in join.membership.text(), timeout=CHAIN)
        assert "not a registered member" in join.membership.text() and address in join.membership.text()
        assert not join.start_node.isEnabled()

        # A file changed after the admin signed it is refused.
        tampered = tmp_path / "tampered.json"
        document = json.loads(federation.consortium.read_text())
        document["timing"]["commit_seconds"] = 5
        tampered.write_text(json.dumps(document))
        _open(qtbot, monkeypatch, join.open_file, tampered)
        qtbot.waitUntil(lambda: "Not joined" in join.membership.text(), timeout=CHAIN)
        assert "changed after the admin signed it" in join.membership.text()

        # The admin registers the address the page showed, and sends the re-signed file.
        store_port = free_port()
        add_hospital(federation.consortium, settings=load_settings(home=federation.home("admin")),
                     rpc_url=federation.rpc_url, address=address, hospital_id="hospital-3",
                     store_url=f"http://127.0.0.1:{store_port}", password=lambda: PASSWORD)
        _open(qtbot, monkeypatch, join.open_file, federation.consortium)
        qtbot.waitUntil(lambda: "Member:" in join.membership.text(), timeout=CHAIN)
        assert "hospital <b>hospital-3</b>" in join.membership.text()
        assert "hospital-1, hospital-2" in join.membership.text()

        # A ledger node that cannot be reached is said to be so.
        type_into(qtbot, join.rpc_url, f"http://127.0.0.1:{free_port()}")
        click(qtbot, join.recheck)
        qtbot.waitUntil(lambda: "Not joined" in join.membership.text(), timeout=CHAIN)
        assert "cannot be reached" in join.membership.text() and not join.start_node.isEnabled()
        type_into(qtbot, join.rpc_url, federation.rpc_url)
        click(qtbot, join.recheck)
        qtbot.waitUntil(lambda: "Member:" in join.membership.text(), timeout=CHAIN)

        # A dataset of another kind is refused; this hospital's own records fit.
        _open(qtbot, monkeypatch, join.pick_dataset, ROOT / "resources" / "samples" / "lesions_medmnist.npz")
        qtbot.waitUntil(lambda: "Refused" in join.dataset_verdict.text(), timeout=CHAIN)
        assert "image dataset" in join.dataset_verdict.text() and not join.start_node.isEnabled()
        _open(qtbot, monkeypatch, join.pick_dataset, own_records)
        qtbot.waitUntil(lambda: "Fits" in join.dataset_verdict.text(), timeout=CHAIN)
        assert "label column 'diagnosis'" in join.dataset_verdict.text()

        federation.coordinator(rounds=1)
        federation.start("coordinator")
        for hid in federation.hospital_ids:
            federation.start(hid, extra=["--until-round", "1"])
        type_into(qtbot, join.epochs, "2")
        click(qtbot, join.start_node)
        assert join.stop_node.isEnabled() and not join.start_node.isEnabled() and not join.open_file.isEnabled()
        assert not page.start.isEnabled()  # no simulation beside a running node

        def finalized() -> bool:
            item = _round(join, 1)
            return item is not None and item.text(3) == "finalized" and len(join.accuracy_curve.getData()[0]) == 1

        deadline = time.monotonic() + 4 * LONG / 1000
        while not finalized():
            assert time.monotonic() < deadline, "\n".join(
                [join.log.toPlainText(), *(f"--- {n}\n{federation.tail(n)}" for n in federation.sites)])
            qtbot.wait(500)

        rows = _rows(_round(join, 1))  # type: ignore[arg-type]
        assert set(rows) == {"hospital-1", "hospital-2", "hospital-3 (this hospital)"}
        for hid, (committed, voted, decision, own_vote, own_scores) in rows.items():
            assert committed == "yes" and voted == "yes", (hid, rows)
            assert decision.startswith("accepted (3–0)"), (hid, rows)
            assert own_vote == "accept" and own_scores.startswith("accuracy "), (hid, rows)
        xs, ys = join.accuracy_curve.getData()
        assert list(xs) == [1] and 0.6 < ys[0] <= 1.0
        assert "after round 1" in join.rounds_caption.text()
        assert not message_boxes(window)

        shot = window.grab()
        path = tmp_path / "07-join-consortium.png"
        assert shot.save(str(path))
        image = QImage(str(path))
        assert len({image.pixel(x, y) for x in range(0, image.width(), 37) for y in range(0, image.height(), 29)}) > 20
        if os.environ.get(SCREENSHOT_ENV):
            shot.save(str(Path(os.environ[SCREENSHOT_ENV]) / path.name))

        click(qtbot, join.stop_node)
        qtbot.waitUntil(join.start_node.isEnabled, timeout=LONG)
        assert "Node stopped" in join.node_status.text()
        assert _round(join, 1).text(3) == "finalized"  # type: ignore[union-attr]  # the record stays
        for hid in federation.hospital_ids:
            assert federation.wait(hid, 120) == 0, federation.tail(hid)

        # Closing the app with the node running stops it cleanly (no thread left, see conftest).
        click(qtbot, join.start_node)
        qtbot.waitUntil(lambda: "following the consortium's rounds" in join.log.toPlainText().split("Node stopped")[-1],
                        timeout=LONG)
        assert _serving(store_port)
        window.close()
        qtbot.waitUntil(lambda: not window.model.is_busy(), timeout=5_000)
        assert not _serving(store_port)  # the node's model store was closed with it
    finally:
        federation.stop_all()

"""Joining a secure consortium: the panel shows this machine's TLS identity against the certificate
the consortium pinned for it, makes the identity when there is none, and refuses to start the node
until the pinned certificate is this machine's.

No chain: the membership check (`check_membership`, which asks the ledger node) is replaced by the
same check on the signed file alone, refusing an address the file does not list as the chain
would. The consortium files are signed by a real admin key; the identities are real.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from PySide6.QtWidgets import QFileDialog
from pytestqt.qtbot import QtBot

from app.main_window import MainWindow
from app.model import CHECKING
from app.pages.consortium_panel import ConsortiumPanel
from core.data.loading import load_dataset
from core.federation.consortium import Consortium, MemberEntry, write_consortium
from core.services import consortium as consortium_service
from core.services.consortium import Site, show_consortium
from core.services.joining import TlsStatus, this_account, tls_state
from core.services.tls import create_tls_identity, tls_identity
from core.settings import Settings
from ledger.consortium import UnregisteredAccount, sign_consortium
from ledger.identity import create_own_account
from tests.app.gui import click, go_to, message_boxes
from tests.core.federation.consortium_sample import sample_consortium, secure_sample, tls_cert
from tests.deployment import LABEL, SAMPLE, split_csv

ADMIN = Account.from_key("0x" + "42" * 32)
# The consortium trains on the sample records as `consortium init --dataset` reads them.
TABLE = load_dataset(str(SAMPLE), label_column=LABEL, drop_columns=("id",))
CHECK = 30_000  # ms: file reads and certificate checks in a worker


def _membership_from_the_file(path: Path, *, settings: Settings, rpc_url: str | None) -> Site:
    """`check_membership` without a ledger node: the signed file's members stand for the chain's."""
    consortium = show_consortium(path)
    account = this_account(settings)
    member = consortium.member(account) if account is not None else None
    if member is None:
        raise UnregisteredAccount(f"This machine's account {account} is not a registered member of the "
                                  f"consortium '{consortium.name}'.", account=account or "")
    return Site(consortium, account or "", member.hospital_id)


@pytest.fixture
def account(settings: Settings) -> str:
    return create_own_account(settings.keystore_dir, "test password", scrypt_n=2**4)


def _signed(path: Path, consortium: Consortium) -> Path:
    write_consortium(path, sign_consortium(consortium, ADMIN))
    return path


def _with_member(account: str, cert: str, **overrides: Any) -> Consortium:
    member = MemberEntry(address=account, hospital_id="st-mary", store_url="https://st-mary:8601", tls_cert=cert)
    return secure_sample(TABLE, admin=ADMIN.address, members=(member,), **overrides)


def _open(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, window: MainWindow, button: object, path: Path) -> None:
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    click(qtbot, button)  # type: ignore[arg-type]
    _settled(qtbot, window)


def _settled(qtbot: QtBot, window: MainWindow) -> None:
    qtbot.waitUntil(lambda: not window.model.is_busy(CHECKING), timeout=CHECK)


def _join_tab(qtbot: QtBot, window: MainWindow) -> ConsortiumPanel:
    page = go_to(qtbot, window, "Federation")
    page.tabs.setCurrentWidget(page.join)
    return page.join


def test_tls_state_follows_the_identity_and_the_pinned_certificate(settings: Settings, account: str) -> None:
    plain = sample_consortium(TABLE)
    not_yet_added = secure_sample(TABLE)

    assert tls_state(plain, settings) is None  # a plain consortium pins nothing
    none = tls_state(not_yet_added, settings)
    assert none is not None and none.status is TlsStatus.NONE and none.party == settings.hospital_name
    made = create_tls_identity(settings, none.party)
    unpinned = tls_state(not_yet_added, settings)
    assert unpinned is not None and unpinned.status is TlsStatus.UNPINNED and unpinned.identity == made
    assert "send this certificate (not the key) to the consortium admin" in unpinned.message

    pinned = tls_state(_with_member(account, made.cert_path.read_text()), settings)
    other = tls_state(_with_member(account, tls_cert("st-mary")), settings)

    assert pinned is not None and pinned.pinned and pinned.party == "st-mary"
    assert "TLS identity pinned by the consortium" in pinned.message
    assert other is not None and other.status is TlsStatus.MISMATCH and not other.pinned
    assert "not the one the consortium pinned for 'st-mary'" in other.message


def test_the_node_waits_for_this_machines_pinned_tls_identity(
    qtbot: QtBot, open_window: Callable[[], MainWindow], settings: Settings, account: str,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setattr(consortium_service, "check_membership", _membership_from_the_file)
    window = open_window()
    join = _join_tab(qtbot, window)

    # A plain consortium pins no certificate: nothing about TLS on the panel.
    _open(qtbot, monkeypatch, window, join.open_file,
          _signed(tmp_path / "plain.json", sample_consortium(TABLE, admin=ADMIN.address)))
    assert "not a registered member" in join.membership.text()
    assert not join.tls_box.isVisible() and not join.start_hint.isVisible()

    # A secure one this hospital is not in yet: make the identity here, send the certificate.
    _open(qtbot, monkeypatch, window, join.open_file,
          _signed(tmp_path / "secure.json", secure_sample(TABLE, admin=ADMIN.address)))
    assert join.tls_box.isVisible() and "no TLS identity yet" in join.tls_verdict.text()
    assert join.create_tls.isVisible() and not join.tls_identity.isVisible()
    click(qtbot, join.create_tls)
    qtbot.waitUntil(lambda: "Not pinned yet" in join.tls_verdict.text(), timeout=CHECK)
    assert "send this certificate (not the key) to the consortium admin" in join.tls_verdict.text()
    made = tls_identity(settings)
    assert made.name == settings.hospital_name and not join.create_tls.isVisible()
    assert made.fingerprint in join.tls_identity.text() and str(made.cert_path) in join.tls_identity.text()
    assert "PRIVATE KEY" not in made.cert_path.read_text()

    # The admin adds the hospital with that certificate: pinned, and the node may start.
    admitted = _signed(tmp_path / "admitted.json", _with_member(account, made.cert_path.read_text()))
    _open(qtbot, monkeypatch, window, join.open_file, admitted)
    assert "Member:" in join.membership.text() and "hospital <b>st-mary</b>" in join.membership.text()
    assert "TLS identity pinned by the consortium" in join.tls_verdict.text()
    _open(qtbot, monkeypatch, window, join.pick_dataset, split_csv(SAMPLE, 3, tmp_path / "own")[2])
    assert "Fits" in join.dataset_verdict.text()
    assert join.start_node.isEnabled() and not join.start_hint.isVisible()

    # A file pinning another certificate for this hospital: the mismatch, and no node.
    _signed(admitted, _with_member(account, tls_cert("st-mary")))
    click(qtbot, join.recheck)
    _settled(qtbot, window)
    assert "Member:" in join.membership.text()
    assert "not the one the consortium pinned for 'st-mary'" in join.tls_verdict.text()
    assert not join.start_node.isEnabled()
    assert join.start_hint.isVisible() and "pinned" in join.start_hint.text()
    assert join.start_node.toolTip() == join.start_hint.text()
    assert not message_boxes(window)

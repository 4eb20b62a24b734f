"""A ledger node that stops mid-round gives the roles a clear error; once it is back, the round
completes from what the chain holds and the home passes the audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.federation.channel import Phase
from core.federation.roles.runner import run_in_turn
from core.services.ledger_audit import audit_ledger, show_ledger
from core.services.simulation import prepare_federation
from core.settings import load_settings
from core.state.models import FederationStatus
from ledger.anvil import AnvilNode
from ledger.errors import NodeUnavailable
from ledger.federation import SimulationLedger
from ledger.session import LedgerSettings, open_ledger
from tests.ledger.conftest import FAST_RETRY, FAST_SCRYPT
from tests.ledger.federations import keep_site_state, small_config

pytestmark = pytest.mark.anvil


def test_a_round_resumes_after_the_ledger_node_restarts(anvil: AnvilNode, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFED_KEYSTORE_PASSWORD", "a hospital's own secret")
    settings = load_settings(home=tmp_path / "home")
    federation = prepare_federation(small_config(rounds=1, rpc_url=anvil.url), settings)
    try:
        keep_site_state(federation)
        channel, nodes = federation.channel, federation.nodes
        # Step the roles until the round is voting and the first hospital's vote is on chain.
        for _ in range(20):
            federation.coordinator.step()
            view = channel.current_round()
            if view is not None and view.phase is Phase.VOTE:
                nodes[0].step()
                break
            for node in nodes:
                node.step()
            federation.archive.step()
        view = channel.current_round()
        assert view is not None and view.phase is Phase.VOTE and view.voters == (nodes[0].hospital_id,)

        anvil.stop()
        with pytest.raises(NodeUnavailable) as exc:
            nodes[1].step()
        assert exc.value.endpoint == anvil.url
        assert "cannot be reached" in exc.value.user_message

        anvil.start()  # same port, its state reloaded from its state file
        run_in_turn(channel, federation.coordinator, nodes, federation.archive)
        federation.sqlite.finish(FederationStatus.COMPLETED)
        (outcome,) = federation.archive.outcomes
    finally:
        federation.close()
    assert outcome.contributors == ["hospital-1", "hospital-2"]
    result = audit_ledger(settings, rpc_url=anvil.url)
    assert result.ok, result.discrepancies
    assert (result.rounds_compared, result.ballots_checked) == (1, 3)  # every validator keeps its ballot
    (entry,) = show_ledger(settings, rpc_url=anvil.url).rounds
    assert sorted(v.validator_id for v in entry.votes) == ["hospital-1", "hospital-2", "hospital-3"]  # none twice


def test_unreachable_node_at_start_is_a_clear_error(tmp_path: Path) -> None:
    from ledger.anvil import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(NodeUnavailable, match="cannot be reached"):
        open_ledger(LedgerSettings(home=tmp_path, rpc_url=url, keystore_password="pw", retry=FAST_RETRY))


def test_a_configured_funder_keystore_pays_for_gas(anvil: AnvilNode, tmp_path: Path) -> None:
    """On a network without unlocked dev accounts, a funder keystore tops up every participant."""
    from ledger.accounts import Keystore
    from ledger.anvil import DEV_PRIVATE_KEY
    from ledger.session import FUNDING

    home = tmp_path / "home"
    Keystore(home / "keystore", "pw", scrypt_n=FAST_SCRYPT).create("funder", bytes.fromhex(DEV_PRIVATE_KEY[2:]))
    settings = LedgerSettings(home=home, rpc_url=anvil.url, keystore_password="pw", scrypt_n=FAST_SCRYPT,
                              retry=FAST_RETRY, funder="funder")
    hospitals = ["hospital-1", "hospital-2", "hospital-3"]
    ledger = SimulationLedger(settings, hospitals)
    try:
        w3, keystore = ledger.session.client.w3, ledger.session.keystore
        participants = ["coordinator", *hospitals]
        assert all(w3.eth.get_balance(keystore.address_of(p)) >= FUNDING - 10**16 for p in participants)
        # the admin, the coordinator and each hospital were funded by it, and nothing else was sent
        assert w3.eth.get_transaction_count(keystore.address_of("funder")) == 1 + len(participants)
    finally:
        ledger.close()


def test_a_transaction_never_mined_times_out_clearly(anvil_binary: Path, tmp_path: Path) -> None:
    from ledger.errors import ReceiptTimeout

    with AnvilNode(anvil_binary, extra_args=("--no-mining",)) as node:
        settings = LedgerSettings(home=tmp_path, rpc_url=node.url, keystore_password="pw", scrypt_n=FAST_SCRYPT,
                                  retry=FAST_RETRY, receipt_timeout=1.0)
        with pytest.raises(ReceiptTimeout) as exc:
            open_ledger(settings)
    assert exc.value.tx_hash.startswith("0x") and "did not confirm" in exc.value.user_message


def test_a_run_whose_node_goes_away_mid_run_is_failed_with_the_reason(
        anvil: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.services.recovery import mark_interrupted_runs
    from core.services.simulation import run_simulation
    from core.state.db import open_database
    from core.state.queries import list_federations

    monkeypatch.setenv("MEDFED_KEYSTORE_PASSWORD", "a hospital's own secret")
    settings = load_settings(home=tmp_path / "home")
    with pytest.raises(NodeUnavailable):
        run_simulation(small_config(rounds=2, rpc_url=anvil.url), settings,
                       on_round=lambda _row: anvil.stop())

    db = open_database(settings.db_path)
    try:
        assert mark_interrupted_runs(db) == 0
        (run,) = list_federations(db)
    finally:
        db.close()
    assert run.status == "failed" and run.message and "cannot be reached" in run.message


def test_a_missing_keystore_password_for_a_node_fails_the_run_with_its_reason(
        anvil: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.services.simulation import run_simulation
    from core.state.db import open_database
    from core.state.queries import list_federations

    monkeypatch.delenv("MEDFED_KEYSTORE_PASSWORD", raising=False)
    settings = load_settings(home=tmp_path / "home")
    with pytest.raises(Exception) as refused:
        run_simulation(small_config(rounds=1, rpc_url=anvil.url), settings)

    db = open_database(settings.db_path)
    try:
        (run,) = list_federations(db)
    finally:
        db.close()
    assert run.status == "failed" and run.message == refused.value.user_message  # type: ignore[attr-defined]
    assert "MEDFED_KEYSTORE_PASSWORD" in run.message

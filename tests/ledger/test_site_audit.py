"""`ledger audit --consortium` in every site's home of a real deployment on anvil: two hospital
nodes and the coordinator, each with its own keystore, blob store and SQLite, run a round; each
home then passes the audit (the hospitals' ballots opened), and a ballot changed in one of them
fails it there."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from core.progress import CancelToken
from core.services import consortium as service
from core.services.deployment import CoordinatorPlan, NodePlan, open_coordinator, open_node
from core.services.ledger_audit import audit_ledger
from core.settings import Settings, load_settings
from ledger.anvil import AnvilNode, free_port
from ledger.node import connect_rpc
from ledger.session import fund_account
from main import main

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

PASSWORD = "test-password"
HOSPITALS = ("st-mary", "st-anne")


def _home(tmp_path: Path, name: str) -> Settings:
    settings = load_settings(home=tmp_path / name)
    service.create_account(settings, lambda: PASSWORD)
    return settings


def test_every_site_of_a_deployment_passes_the_audit(anvil: AnvilNode, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFED_KEYSTORE_PASSWORD", PASSWORD)
    coordinator = _home(tmp_path, "coordinator")
    hospitals = {name: _home(tmp_path, name) for name in HOSPITALS}
    kit = tmp_path / "kit" / "consortium.json"
    assert main(["consortium", "init", "--rpc", anvil.url, "--home", str(tmp_path / "admin"), "--out", str(kit),
                 "--name", "Audit consortium", "--dataset", "breast_cancer",
                 "--coordinator", service.account_address(coordinator),
                 "--coordinator-store", f"http://127.0.0.1:{free_port()}",
                 "--commit-seconds", "120", "--vote-seconds", "120", "--aggregate-seconds", "120"]) == 0
    for name, settings in hospitals.items():
        assert main(["consortium", "add-hospital", "--consortium", str(kit), "--home", str(tmp_path / "admin"),
                     "--rpc", anvil.url, service.account_address(settings), name,
                     "--store-url", f"http://127.0.0.1:{free_port()}"]) == 0

    w3 = connect_rpc(anvil.url)
    for settings in [coordinator, *hospitals.values()]:  # gas money, as a test network's operator gives it
        fund_account(w3, service.account_address(settings), funder=None, timeout=30, endpoint=anvil.url)

    sites = [open_node(NodePlan(consortium=kit, dataset="breast_cancer", rpc_url=anvil.url, epochs=1,
                                poll_seconds=0.1), settings) for settings in hospitals.values()]
    sites.append(open_coordinator(CoordinatorPlan(consortium=kit, rounds=1, rpc_url=anvil.url, poll_seconds=0.1),
                                  coordinator))
    try:
        cancel = CancelToken()
        for _ in range(400):  # each site steps in turn, as their separate processes would
            for site in sites:
                site.step(cancel)
            if all(s._finished(1) for s in sites):  # noqa: SLF001 - the run loop's own stop test
                break
        else:
            pytest.fail("the round did not finish")
        for site in sites:
            site.archive.step()
    finally:
        for site in sites:
            site.close()

    for name, settings in [*hospitals.items(), ("coordinator", coordinator)]:
        result = audit_ledger(settings, rpc_url=anvil.url, consortium=kit)
        assert result.ok, (name, result.discrepancies)
        assert result.rounds_compared == 1 and result.chain.blobs_checked == 2  # the initial and global model
        assert result.ballots_checked == (0 if name == "coordinator" else 1)

    def cli_audit(settings: Settings) -> int:
        return main(["ledger", "audit", "--home", str(settings.home), "--consortium", str(kit), "--rpc", anvil.url])

    assert cli_audit(hospitals["st-anne"]) == 0
    st_mary = hospitals["st-mary"]
    with sqlite3.connect(st_mary.db_path) as conn:
        (raw,) = conn.execute("SELECT document FROM role_states WHERE role = 'node'").fetchone()
        document = json.loads(raw)
        (ballot,) = document["ballots"].values()
        ballot["salt"] = "00" * 16
        conn.execute("UPDATE role_states SET document = ? WHERE role = 'node'", (json.dumps(document),))
    result = audit_ledger(st_mary, rpc_url=anvil.url, consortium=kit)
    assert not result.ok
    assert result.first_discrepancy is not None
    assert result.first_discrepancy.startswith("st-mary's ballot in round 1 ")
    assert "does not open to its scores hash" in result.first_discrepancy
    assert cli_audit(st_mary) == 10

"""`ledger audit` end to end: SQLite and the ledger recorded together, then a changed row or byte."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from core.federation.recorders import CompositeRecorder
from core.services.ledger_audit import (
    audit_as_dict,
    audit_ledger,
    format_audit,
    format_show,
    is_model_on_ledger,
    recent_blocks,
    show_ledger,
)
from core.settings import Settings, load_settings
from core.state.db import open_database
from core.state.recorder import SqliteRecorder
from ledger.recorder import Web3Recorder
from ledger.session import LedgerSettings
from tests.ledger.conftest import FAST_SCRYPT
from tests.ledger.rounds import PlannedRound, honest_except, hospitals, initial_weights, plan_round, record

MEMBERS = hospitals(4)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PlannedRound]]:
    """A data directory with two rounds recorded in SQLite and on the embedded ledger."""
    settings = load_settings(home=tmp_path_factory.mktemp("template") / "home")
    db = open_database(settings.db_path)
    chain = Web3Recorder.open(
        LedgerSettings(
            home=settings.home,
            keystore_password="pw",
            scrypt_n=FAST_SCRYPT,
            keystore_path=settings.keystore_dir,
            blob_path=settings.blob_dir,
        )
    )
    recorder = CompositeRecorder([SqliteRecorder(db, blob_dir=settings.blob_dir), chain])
    recorder.register_hospitals(MEMBERS)
    first = plan_round(1, initial_weights(), MEMBERS, honest_except("hospital-2"))
    record(recorder, first)
    second = plan_round(2, first.outcome.global_weights, MEMBERS, honest_except())
    record(recorder, second)
    recorder.close()
    # A run recorded in SQLite only (`simulate --no-ledger`): the audit leaves it out.
    local_only = SqliteRecorder(db, config={"ledger": False})
    local_only.register_hospitals(MEMBERS)
    record(local_only, plan_round(1, initial_weights(seed=5), MEMBERS, honest_except()))
    local_only.close()
    db.close()
    return settings.home, [first, second]


@pytest.fixture
def recorded(
    template: tuple[Path, list[PlannedRound]], tmp_path: Path
) -> tuple[Settings, list[PlannedRound]]:
    """A private copy of the template's data directory, free to damage."""
    home = tmp_path / "home"
    shutil.copytree(template[0], home)
    return load_settings(home=home), template[1]


def test_agreeing_state_and_ledger_audit_ok(recorded: tuple[Settings, list[PlannedRound]]) -> None:
    settings, (first, _) = recorded
    result = audit_ledger(settings)
    assert result.ok, result.discrepancies
    assert result.rounds_compared == 2
    assert result.notes == ["federation 2 was recorded without the ledger; not compared"]
    history = show_ledger(settings)
    assert [(r.number, r.state, len(r.votes)) for r in history.rounds] == [
        (1, "finalized", 16),
        (2, "finalized", 16),
    ]
    assert is_model_on_ledger(settings, first.outcome.global_hash)
    shown = format_show(history).splitlines()
    assert (
        shown[1].startswith("round 1 (id 1) finalized") and "hospital-0, hospital-1, hospital-3" in shown[1]
    )
    assert any(line.startswith("  model hospital-2 ") and line.endswith("rejected 0/4") for line in shown)
    assert format_audit(result).startswith("ledger audit OK: ")
    assert audit_as_dict(result)["ok"] is True
    assert recent_blocks(settings, limit=1)[0].transactions[0].function == "finalizeRound"


def test_a_changed_database_row_is_named(recorded: tuple[Settings, list[PlannedRound]]) -> None:
    settings, _ = recorded
    with sqlite3.connect(settings.db_path) as conn:
        changed = conn.execute(
            "UPDATE votes SET accept = 1 WHERE validator_id = 'hospital-1' AND candidate_id = 'hospital-2' "
            "AND round_id = (SELECT id FROM rounds WHERE number = 1)"
        ).rowcount
    assert changed == 1
    result = audit_ledger(settings)
    assert not result.ok
    assert format_audit(result).startswith("ledger audit FAILED")
    assert audit_as_dict(result)["first_discrepancy"] == result.first_discrepancy
    assert result.first_discrepancy == (
        "federation 1 round 1: hospital-1's vote on hospital-2 is accept locally, reject on the ledger"
    )


def test_a_changed_global_hash_in_the_database_is_named(
    recorded: tuple[Settings, list[PlannedRound]],
) -> None:
    settings, (_, second) = recorded
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("UPDATE rounds SET global_hash = ? WHERE number = 2", ("ee" * 32,))
    result = audit_ledger(settings)
    assert not result.ok
    assert result.first_discrepancy is not None and result.first_discrepancy.startswith(
        "federation 1 round 2: "
    )
    assert f"{second.outcome.global_hash} on the ledger" in result.first_discrepancy


def test_a_changed_blob_byte_fails_the_audit(recorded: tuple[Settings, list[PlannedRound]]) -> None:
    settings, (_, second) = recorded
    path = settings.blob_dir / second.outcome.global_hash
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    result = audit_ledger(settings)
    assert not result.ok
    assert result.first_discrepancy is not None and result.first_discrepancy.startswith("round 2 ")

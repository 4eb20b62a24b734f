"""CompositeRecorder: SQLite first, then the ledger; a later failure surfaces after the earlier
recorders have recorded, and clean-up reaches every recorder."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pytest

from core.federation.interfaces import Recorder
from core.federation.policy import VerificationPolicy
from core.federation.recorders import CompositeRecorder
from core.federation.types import Commitment, Decision, Failure, HospitalInfo, RoundOutcome, Vote
from core.models.weights import Weights, weights_hash
from core.state import queries
from core.state.db import Database
from core.state.recorder import SqliteRecorder
from tests.core.state.conftest import HOSPITALS, POLICY, make_round, make_weights


class LedgerDown(Exception):
    """Stands in for the ledger package's error."""


class FlakyLedger(Recorder):
    """A Recorder that logs calls and refuses the steps named in `fail_on`."""

    name = "ledger"

    def __init__(self, fail_on: Collection[str] = ()) -> None:
        self.fail_on = set(fail_on)
        self.calls: list[str] = []

    def _call(self, step: str) -> None:
        self.calls.append(step)
        if step in self.fail_on:
            raise LedgerDown(f"{step} reverted")

    def register_hospitals(self, hospitals: Sequence[HospitalInfo]) -> None:
        self._call("register_hospitals")

    def open_round(
        self, round_number: int, global_hash: str, global_weights: Weights, policy: VerificationPolicy
    ) -> None:
        self._call("open_round")

    def record_commitment(self, commitment: Commitment) -> None:
        self._call("record_commitment")

    def record_votes(self, votes: Sequence[Vote]) -> None:
        self._call("record_votes")

    def record_decisions(self, decisions: Sequence[Decision]) -> None:
        self._call("record_decisions")

    def record_failure(self, failure: Failure) -> None:
        self._call("record_failure")

    def finalize_round(self, outcome: RoundOutcome) -> None:
        self._call("finalize_round")

    def abort_round(self, round_number: int, reason: str) -> None:
        self._call("abort_round")

    def close(self) -> None:
        self._call("close")


def open_first_round(composite: CompositeRecorder) -> RoundOutcome:
    previous = make_weights(1000)
    outcome, _ = make_round(1, previous)
    composite.register_hospitals(HOSPITALS)
    composite.open_round(1, weights_hash(previous), previous, POLICY)
    return outcome


def test_steps_reach_every_recorder_in_order(db: Database) -> None:
    sqlite = SqliteRecorder(db)
    ledger = FlakyLedger()
    composite = CompositeRecorder([sqlite, ledger])

    outcome = open_first_round(composite)
    composite.finalize_round(outcome)
    composite.close()

    assert ledger.calls == ["register_hospitals", "open_round", "finalize_round", "close"]
    assert queries.get_round(db, sqlite.federation_id, 1).status == "finalized"


def test_ledger_failure_raises_after_sqlite_recorded(db: Database) -> None:
    sqlite = SqliteRecorder(db)
    ledger = FlakyLedger(fail_on={"finalize_round"})
    composite = CompositeRecorder([sqlite, ledger])
    outcome = open_first_round(composite)

    with pytest.raises(LedgerDown) as info:
        composite.finalize_round(outcome)

    assert queries.get_round(db, sqlite.federation_id, 1).status == "finalized"
    assert any("already recorded by sqlite" in note for note in info.value.__notes__)


def test_sqlite_failure_keeps_the_ledger_from_recording(db: Database) -> None:
    sqlite = SqliteRecorder(db)
    ledger = FlakyLedger()
    composite = CompositeRecorder([sqlite, ledger])
    open_first_round(composite)

    with pytest.raises(Exception, match="never opened"):
        composite.record_commitment(Commitment("h1", 9, "a" * 64))

    assert "record_commitment" not in ledger.calls


def test_abort_reaches_every_recorder_even_when_one_fails(db: Database) -> None:
    sqlite = SqliteRecorder(db)
    first_ledger = FlakyLedger(fail_on={"abort_round"})
    second_ledger = FlakyLedger()
    composite = CompositeRecorder([sqlite, first_ledger, second_ledger])
    open_first_round(composite)

    with pytest.raises(LedgerDown):
        composite.abort_round(1, "cancelled by the user")

    assert queries.get_round(db, sqlite.federation_id, 1).status == "aborted"
    assert second_ledger.calls[-1] == "abort_round"


def test_an_empty_composite_is_refused() -> None:
    with pytest.raises(ValueError):
        CompositeRecorder([])

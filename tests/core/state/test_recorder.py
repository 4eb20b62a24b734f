"""SqliteRecorder: whole rounds written and read back, crashes mid-round, abort and retry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.errors import StateError
from core.federation.types import Commitment, Decision, Failure, HospitalInfo, Vote
from core.models.weights import weights_hash
from core.state import queries
from core.state.blobs import BlobStore
from core.state.db import Database, open_database
from core.state.models import FederationStatus, ModelRecord, Round, VoteRecord
from core.state.recorder import SqliteRecorder
from tests.core.state.conftest import HOSPITALS, POLICY, honest_scores, make_round, make_weights


def count(db: Database, model: type) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def run_round_stepwise(recorder: SqliteRecorder, number: int, seed: int = 0) -> None:
    """Records a round the way the engine does: open, commitments, votes, decisions, finalize."""
    previous = make_weights(1000 + number - 1)
    outcome, commitments = make_round(number, previous, seed)
    recorder.open_round(number, weights_hash(previous), previous, POLICY)
    for commitment in commitments:
        recorder.record_commitment(commitment)
    recorder.record_votes(outcome.votes)
    recorder.record_decisions(outcome.decisions)
    recorder.finalize_round(outcome)


@pytest.fixture
def recorder(db: Database, tmp_path: Path) -> SqliteRecorder:
    rec = SqliteRecorder(
        db, federation_name="test sim", config={"rounds": 3, "seed": 7}, blob_dir=tmp_path / "blobs"
    )
    rec.register_hospitals(HOSPITALS)
    return rec


def test_a_whole_round_reads_back_through_the_queries(db: Database, recorder: SqliteRecorder) -> None:
    previous = make_weights(1000)
    outcome, commitments = make_round(1, previous)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)
    for commitment in commitments:
        recorder.record_commitment(commitment)
    recorder.record_votes(outcome.votes)
    recorder.record_decisions(outcome.decisions)
    recorder.finalize_round(outcome)

    (round_,) = queries.list_rounds(db, recorder.federation_id)
    assert round_.status == "finalized"
    assert round_.number == 1
    assert round_.previous_hash == weights_hash(previous)
    assert round_.global_hash == outcome.global_hash
    assert round_.contributors == ("h1", "h2", "h3")
    assert round_.accuracy == pytest.approx(0.75)
    assert round_.durations == {"verification": 1.5}
    assert round_.policy["digest"] == POLICY.digest()
    statuses = {m.hospital_id: m.status for m in round_.models}
    assert statuses == {"h1": "accepted", "h2": "accepted", "h3": "accepted", "h4": "rejected"}
    mallory = round_.model("h4")
    assert mallory is not None and mallory.malicious and mallory.hospital_name == "Mallory General"
    assert (mallory.accepts, mallory.rejects, mallory.registered) == (1, 3, 4)
    assert mallory.model_hash == commitments[3].model_hash
    assert mallory.share_commitments == ("h4-share-a", "h4-share-b")
    assert len(mallory.votes) == 4
    vote = next(v for v in mallory.votes if v.validator_id == "h1")
    assert vote.accept is False
    assert vote.scores["cosine"] == pytest.approx(-0.7)
    assert vote.scores["accuracy"] == pytest.approx(0.2)
    # The engine hands the votes twice (record_votes and the outcome): stored once.
    assert count(db, VoteRecord) == 16
    assert count(db, ModelRecord) == 4


def test_each_vote_reads_back_with_what_the_rounds_policy_makes_of_its_scores(
    db: Database, recorder: SqliteRecorder
) -> None:
    run_round_stepwise(recorder, 1)
    (round_,) = queries.list_rounds(db, recorder.federation_id)

    verdicts = round_.policy_verdicts()

    assert len(verdicts) == 16
    assert verdicts[("h1", "h2")] == []
    assert [r.split()[0] for r in verdicts[("h1", "h4")]] == ["accuracy", "cosine", "norm"]  # min_cosine 0 here
    # The colluding h4 accepted itself although its scores say otherwise: the verdict says so.
    assert verdicts[("h4", "h4")] and next(v for v in round_.model("h4").votes if v.validator_id == "h4").accept


def test_a_round_without_a_readable_policy_has_no_verdicts(db: Database, recorder: SqliteRecorder) -> None:
    run_round_stepwise(recorder, 1)
    (round_,) = queries.list_rounds(db, recorder.federation_id)
    broken = dataclasses.replace(round_, policy={"max_norm_ratio": "much"})
    assert broken.policy_verdicts() == {}


def test_finalize_alone_records_the_whole_outcome(db: Database, recorder: SqliteRecorder) -> None:
    previous = make_weights(1000)
    outcome, _ = make_round(1, previous)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)

    recorder.finalize_round(outcome)

    round_ = queries.get_round(db, recorder.federation_id, 1)
    assert len(round_.models) == 4 and sum(len(m.votes) for m in round_.models) == 16
    assert round_.model("h4").status == "rejected"  # type: ignore[union-attr]


def test_federation_list_series_and_ratio_after_three_rounds(db: Database, recorder: SqliteRecorder) -> None:
    for number in (1, 2, 3):
        run_round_stepwise(recorder, number, seed=number)
    recorder.finish(FederationStatus.COMPLETED)

    (federation,) = queries.list_federations(db)
    assert federation.name == "test sim"
    assert federation.config == {"rounds": 3, "seed": 7}
    assert federation.status == "completed"
    assert federation.finished_at is not None
    assert federation.final_accuracy == pytest.approx(0.85)
    assert (federation.rounds_total, federation.rounds_finalized) == (3, 3)
    assert [h.hospital_id for h in federation.hospitals] == ["h1", "h2", "h3", "h4"]
    assert [h.malicious for h in federation.hospitals] == [False, False, False, True]

    series = queries.accuracy_series(db, recorder.federation_id)
    assert [(p.round_number, p.value) for p in series] == [
        (1, pytest.approx(0.75)),
        (2, pytest.approx(0.80)),
        (3, pytest.approx(0.85)),
    ]
    ratio = queries.status_ratio(db, recorder.federation_id)
    assert ratio.overall.accepted == 9 and ratio.overall.rejected == 3
    assert ratio.overall.accepted_ratio == pytest.approx(0.75)
    assert ratio.per_round[2].accepted == 3 and ratio.per_round[2].rejected == 1


def test_global_models_are_kept_as_blobs(recorder: SqliteRecorder, tmp_path: Path) -> None:
    previous = make_weights(1000)
    outcome, _ = make_round(1, previous)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)
    recorder.finalize_round(outcome)

    blobs = BlobStore(tmp_path / "blobs")
    restored = blobs.get_weights(outcome.global_hash)
    assert weights_hash(restored) == outcome.global_hash
    assert weights_hash(previous) in blobs


def test_crash_inside_a_step_leaves_no_partial_rows(db: Database, recorder: SqliteRecorder) -> None:
    previous = make_weights(1000)
    outcome, commitments = make_round(1, previous)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)
    for commitment in commitments:
        recorder.record_commitment(commitment)
    # The last vote of the batch names a hospital that was never registered.
    bad_batch = [*outcome.votes[:5], Vote(1, "h1", "intruder", True, honest_scores())]

    with pytest.raises(StateError, match="intruder"):
        recorder.record_votes(bad_batch)

    assert count(db, VoteRecord) == 0
    assert queries.get_round(db, recorder.federation_id, 1).status == "open"


def test_crash_during_finalize_leaves_the_round_as_it_was(
    db: Database, recorder: SqliteRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = make_weights(1000)
    outcome, commitments = make_round(1, previous)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)
    for commitment in commitments:
        recorder.record_commitment(commitment)

    def power_cut(*_: object) -> None:
        raise OSError("power cut")

    # Dies after the votes and decisions were written inside the transaction, before the commit.
    monkeypatch.setattr(SqliteRecorder, "_add_failure", staticmethod(power_cut))
    outcome.failures.append(Failure(1, "h2", "voting", "timeout"))
    with pytest.raises(OSError, match="power cut"):
        recorder.finalize_round(outcome)
    monkeypatch.undo()

    round_ = queries.get_round(db, recorder.federation_id, 1)
    assert round_.status == "open"
    assert round_.global_hash is None and round_.contributors == () and round_.metrics == {}
    assert {m.status for m in round_.models} == {"pending"}
    assert count(db, VoteRecord) == 0
    # The same outcome finalises once the fault is gone.
    recorder.finalize_round(outcome)
    assert queries.get_round(db, recorder.federation_id, 1).status == "finalized"


def test_inconsistent_outcome_is_refused_whole(db: Database, recorder: SqliteRecorder) -> None:
    previous = make_weights(1000)
    outcome, _ = make_round(1, previous)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)
    outcome.contributors.append("h4")  # aggregating a rejected update

    with pytest.raises(StateError, match="h4"):
        recorder.finalize_round(outcome)

    assert count(db, ModelRecord) == 0 and count(db, VoteRecord) == 0
    assert queries.get_round(db, recorder.federation_id, 1).status == "open"


def test_abort_keeps_what_was_recorded_then_a_retry_starts_afresh(
    db: Database, recorder: SqliteRecorder
) -> None:
    run_round_stepwise(recorder, 1)
    previous = make_weights(1001)
    outcome, commitments = make_round(2, previous, seed=2)
    recorder.open_round(2, weights_hash(previous), previous, POLICY)
    recorder.record_commitment(commitments[0])
    recorder.record_votes(outcome.votes[:3])
    recorder.record_failure(Failure(2, "h3", "training", "GPU out of memory"))

    recorder.abort_round(2, "the SMPC players stopped answering")

    aborted = queries.get_round(db, recorder.federation_id, 2)
    assert aborted.status == "aborted"
    assert aborted.abort_reason == "the SMPC players stopped answering"
    assert aborted.finished_at is not None
    assert [(m.hospital_id, m.status) for m in aborted.models] == [("h1", "pending")]
    assert count(db, VoteRecord) == 16 + 3  # round 1, and the votes round 2 got before its abort
    assert [(f.hospital_id, f.stage) for f in aborted.failures] == [("h3", "training")]
    with pytest.raises(StateError, match="aborted"):
        recorder.record_commitment(commitments[1])
    assert [p.round_number for p in queries.accuracy_series(db, recorder.federation_id)] == [1]

    # Retry of the same round number: the aborted rows go, the new ones come, one transaction.
    recorder.open_round(2, weights_hash(previous), previous, POLICY)
    retried = queries.get_round(db, recorder.federation_id, 2)
    assert retried.status == "open" and retried.models == () and retried.failures == ()
    assert retried.abort_reason is None
    for commitment in commitments:
        recorder.record_commitment(commitment)
    recorder.record_votes(outcome.votes)
    recorder.record_decisions(outcome.decisions)
    recorder.finalize_round(outcome)

    final = queries.get_round(db, recorder.federation_id, 2)
    assert final.status == "finalized" and len(final.models) == 4
    assert count(db, VoteRecord) == 32
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Round)) == 2


def test_abort_of_a_finalized_round_drops_it_from_the_results(db: Database, recorder: SqliteRecorder) -> None:
    # The ledger failed after SQLite finalised; the engine then aborts the round everywhere.
    run_round_stepwise(recorder, 1)
    run_round_stepwise(recorder, 2, seed=2)

    recorder.abort_round(2, "ledger: transaction reverted")

    assert queries.get_round(db, recorder.federation_id, 2).status == "aborted"
    assert [p.round_number for p in queries.accuracy_series(db, recorder.federation_id)] == [1]
    assert queries.get_federation(db, recorder.federation_id).final_accuracy == pytest.approx(0.75)
    ratio = queries.status_ratio(db, recorder.federation_id)
    assert ratio.per_round[2].accepted == 3  # what happened in the round stays visible
    assert ratio.overall.accepted == 3  # but only finalized rounds count overall


def test_finalized_round_cannot_be_reopened(recorder: SqliteRecorder) -> None:
    run_round_stepwise(recorder, 1)
    previous = make_weights(1000)

    with pytest.raises(StateError, match="already finalized"):
        recorder.open_round(1, weights_hash(previous), previous, POLICY)


def test_steps_need_an_open_round_and_registered_hospitals(recorder: SqliteRecorder) -> None:
    with pytest.raises(StateError, match="never opened"):
        recorder.record_commitment(Commitment("h1", 5, "a" * 64))
    previous = make_weights(1000)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)
    with pytest.raises(StateError, match="not registered"):
        recorder.record_commitment(Commitment("stranger", 1, "a" * 64))
    with pytest.raises(StateError, match="never committed"):
        recorder.record_decisions([Decision(1, "h1", "a" * 64, 3, 1, 4)])


def test_a_failure_after_commitment_marks_the_model_failed(db: Database, recorder: SqliteRecorder) -> None:
    previous = make_weights(1000)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)
    recorder.record_commitment(Commitment("h2", 1, "b" * 64))

    recorder.record_failure(Failure(1, "h2", "verification", "connection reset"))

    round_ = queries.get_round(db, recorder.federation_id, 1)
    assert round_.model("h2").status == "failed"  # type: ignore[union-attr]
    assert round_.failures[0].message == "connection reset"


def test_unverified_baseline_decisions_are_recorded(db: Database, recorder: SqliteRecorder) -> None:
    previous = make_weights(1000)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)
    recorder.record_commitment(Commitment("h4", 1, "c" * 64))

    recorder.record_decisions([Decision(1, "h4", "c" * 64, 0, 0, 4, unverified=True)])

    model = queries.get_round(db, recorder.federation_id, 1).model("h4")
    assert model is not None and model.status == "accepted" and model.unverified


def test_state_survives_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = open_database(path)
    recorder = SqliteRecorder(db, federation_name="persisted")
    recorder.register_hospitals(HOSPITALS)
    run_round_stepwise(recorder, 1)
    federation_id = recorder.federation_id
    recorder.close()
    db.close()

    with open_database(path) as reopened:
        assert queries.get_round(reopened, federation_id, 1).status == "finalized"
        # A recorder can resume an existing federation by id.
        resumed = SqliteRecorder(reopened, federation_id)
        run_round_stepwise(resumed, 2, seed=2)
        assert [p.round_number for p in queries.accuracy_series(reopened, federation_id)] == [1, 2]


def test_unknown_federation_id_is_refused(db: Database) -> None:
    with pytest.raises(StateError, match="no federation 42"):
        SqliteRecorder(db, 42)


def test_re_registering_updates_names_and_accounts(db: Database, recorder: SqliteRecorder) -> None:
    recorder.register_hospitals([HospitalInfo("h1", "St. Anna Klinikum", account="0x" + "1" * 40)])

    hospitals = {h.hospital_id: h for h in queries.get_federation(db, recorder.federation_id).hospitals}
    assert hospitals["h1"].name == "St. Anna Klinikum"
    assert hospitals["h1"].account == "0x" + "1" * 40
    assert len(hospitals) == 4


def test_contributor_that_never_committed_is_refused(db: Database, recorder: SqliteRecorder) -> None:
    previous = make_weights(1000)
    outcome, _ = make_round(1, previous)
    recorder.open_round(1, weights_hash(previous), previous, POLICY)
    outcome.commitments.pop(0)  # h1's commitment never reached the recorder
    outcome.decisions.pop(0)

    with pytest.raises(StateError, match="h1, which never committed"):
        recorder.finalize_round(outcome)

    assert queries.get_round(db, recorder.federation_id, 1).status == "open"

"""`Web3Recorder` as the engine uses it, on the embedded chain and on anvil."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from core.federation.types import Decision, Failure
from ledger.client import RoundState
from ledger.errors import DecisionMismatch, LedgerError, UnknownAccount
from ledger.explorer import list_blocks
from ledger.history import replay
from ledger.recorder import Web3Recorder
from ledger.session import LedgerSettings
from tests.ledger.rounds import POLICY, honest_except, hospitals, initial_weights, plan_round, record

MEMBERS = hospitals(5)


@pytest.fixture
def recorder(settings: LedgerSettings) -> Iterator[Web3Recorder]:
    rec = Web3Recorder.open(settings)
    rec.register_hospitals(MEMBERS)
    yield rec
    rec.close()


def test_register_gives_each_hospital_its_own_keystore_account(recorder: Web3Recorder) -> None:
    client = recorder.client
    addresses = [recorder.address_of(h.hospital_id) for h in MEMBERS]
    assert len(set(addresses)) == 5 and client.authorities() == addresses
    keystore = recorder.session.keystore
    assert [keystore.address_of(h.hospital_id) for h in MEMBERS] == addresses
    blocks_before = client.w3.eth.block_number
    recorder.register_hospitals(MEMBERS)  # idempotent: already registered, nothing sent
    assert client.w3.eth.block_number == blocks_before


def test_a_round_is_recorded_and_decided_on_chain(recorder: Web3Recorder) -> None:
    planned = plan_round(1, initial_weights(), MEMBERS, honest_except("hospital-4"))
    record(recorder, planned)
    history = replay(recorder.client)
    assert history.problems == []
    (entry,) = history.rounds
    assert (entry.number, entry.state, entry.previous_hash, entry.policy_digest) == (
        1,
        "finalized",
        planned.start_hash,
        POLICY.digest(),
    )
    assert entry.global_hash == planned.outcome.global_hash
    assert entry.contributors == ["hospital-0", "hospital-1", "hospital-2", "hospital-3"]
    assert [c.model_hash for c in entry.commitments] == [c.model_hash for c in planned.commitments]
    assert len(entry.votes) == 25
    assert {d.candidate_id: d.accepted for d in entry.decisions}["hospital-4"] is False
    vote = next(v for v in entry.votes if (v.validator_id, v.candidate_id) == ("hospital-1", "hospital-2"))
    planned_vote = next(
        v for v in planned.votes if (v.validator_id, v.candidate_id) == ("hospital-1", "hospital-2")
    )
    assert vote.cosine == pytest.approx(planned_vote.scores.cosine, abs=1e-6)
    assert vote.correct == planned_vote.scores.correct
    assert recorder.blobs.get(planned.outcome.global_hash)  # the new global model is in the blob store
    assert recorder.round_state(1) == RoundState.FINALIZED


def test_each_vote_is_signed_by_its_validator(recorder: Web3Recorder) -> None:
    planned = plan_round(1, initial_weights(), MEMBERS, honest_except())
    record(recorder, planned)
    senders = {
        tx.sender
        for b in list_blocks(recorder.client, limit=30)
        for tx in b.transactions
        if tx.function == "vote"
    }
    assert senders == {recorder.address_of(h.hospital_id) for h in MEMBERS}


def test_repeating_steps_sends_nothing_new(recorder: Web3Recorder) -> None:
    """Resuming after an interruption repeats steps; what is on chain is not sent again."""
    planned = plan_round(1, initial_weights(), MEMBERS, honest_except("hospital-0"))
    recorder.open_round(1, planned.start_hash, planned.start, POLICY)
    for c in planned.commitments[:3]:
        recorder.record_commitment(c)
    recorder.open_round(1, planned.start_hash, planned.start, POLICY)  # resumed, not reopened
    head = recorder.client.w3.eth.block_number
    for c in planned.commitments[:3]:
        recorder.record_commitment(c)
    assert recorder.client.w3.eth.block_number == head
    for c in planned.commitments[3:]:
        recorder.record_commitment(c)
    recorder.record_votes(planned.votes[:7])
    recorder.record_votes(planned.votes)
    recorder.record_decisions(planned.decisions)
    recorder.record_decisions(planned.decisions)
    recorder.finalize_round(planned.outcome)
    head = recorder.client.w3.eth.block_number
    recorder.finalize_round(planned.outcome)
    assert recorder.client.w3.eth.block_number == head
    history = replay(recorder.client)
    assert history.problems == [] and len(history.rounds) == 1 and len(history.rounds[0].votes) == 25


def test_a_different_commitment_for_the_same_round_is_refused(recorder: Web3Recorder) -> None:
    planned = plan_round(1, initial_weights(), MEMBERS, honest_except())
    recorder.open_round(1, planned.start_hash, planned.start, POLICY)
    recorder.record_commitment(planned.commitments[0])
    with pytest.raises(LedgerError, match="already committed another model"):
        recorder.record_commitment(replace(planned.commitments[0], model_hash="ab" * 32))


def test_engine_decision_differing_from_chain_raises(recorder: Web3Recorder) -> None:
    planned = plan_round(1, initial_weights(), MEMBERS, honest_except("hospital-2"))
    recorder.open_round(1, planned.start_hash, planned.start, POLICY)
    for c in planned.commitments:
        recorder.record_commitment(c)
    recorder.record_votes(planned.votes)
    wrong = [
        d if d.candidate_id != "hospital-2" else Decision(1, "hospital-2", d.model_hash, 5, 0, 5)
        for d in planned.decisions
    ]
    with pytest.raises(DecisionMismatch) as exc:
        recorder.record_decisions(wrong)
    assert exc.value.candidate_id == "hospital-2"
    assert (exc.value.chain_accepted, exc.value.engine_accepted) == (False, True)


def test_contributors_other_than_accepted_are_refused(recorder: Web3Recorder) -> None:
    planned = plan_round(1, initial_weights(), MEMBERS, honest_except("hospital-3"))
    recorder.open_round(1, planned.start_hash, planned.start, POLICY)
    for c in planned.commitments:
        recorder.record_commitment(c)
    recorder.record_votes(planned.votes)
    recorder.record_decisions(planned.decisions)
    bad = replace(planned.outcome, contributors=[*planned.outcome.contributors, "hospital-3"])
    with pytest.raises(LedgerError, match="exactly its accepted models"):
        recorder.finalize_round(bad)
    assert recorder.round_state(1) == RoundState.OPEN


def test_abort_then_reopen_and_failures(recorder: Web3Recorder) -> None:
    planned = plan_round(1, initial_weights(), MEMBERS, honest_except())
    recorder.open_round(1, planned.start_hash, planned.start, POLICY)
    failure = Failure(1, "hospital-4", "training", "out of memory")
    recorder.record_failure(failure)
    recorder.record_failure(failure)  # recorded once
    recorder.abort_round(1, "no quorum")
    recorder.abort_round(1, "no quorum")  # nothing open any more: no-op
    record(recorder, planned)
    history = replay(recorder.client)
    assert [(r.number, r.state) for r in history.rounds] == [(1, "aborted"), (1, "finalized")]
    assert history.rounds[0].abort_reason == "no quorum"
    assert [(f.hospital_id, f.stage, f.message) for f in history.rounds[0].failures] == [
        ("hospital-4", "training", "out of memory")
    ]


def test_unknown_hospital_is_a_clear_error(recorder: Web3Recorder) -> None:
    planned = plan_round(1, initial_weights(), MEMBERS, honest_except())
    recorder.open_round(1, planned.start_hash, planned.start, POLICY)
    with pytest.raises(UnknownAccount) as exc:
        recorder.record_commitment(replace(planned.commitments[0], hospital_id="hospital-99"))
    assert exc.value.hospital_id == "hospital-99"


def test_two_rounds_chain_their_global_models(recorder: Web3Recorder) -> None:
    first = plan_round(1, initial_weights(), MEMBERS, honest_except())
    record(recorder, first)
    second = plan_round(2, first.outcome.global_weights, MEMBERS, honest_except("hospital-1"))
    record(recorder, second)
    rounds = replay(recorder.client).finalized()
    assert [r.previous_hash for r in rounds] == [first.start_hash, first.outcome.global_hash]
    assert recorder.global_hash(2) == second.outcome.global_hash


def test_registry_follows_the_federation_membership(recorder: Web3Recorder) -> None:
    """A later run with fewer hospitals: only they count towards the majority."""
    smaller = MEMBERS[:3]
    recorder.register_hospitals(smaller)
    assert recorder.client.authorities() == [recorder.address_of(h.hospital_id) for h in smaller]
    # 2 of 3 accept hospital-2: a majority of the 3 now registered (it would not be of 5).
    planned = plan_round(1, initial_weights(), smaller, lambda v, c: c != "hospital-2" or v != "hospital-0")
    record(recorder, planned)
    (entry,) = replay(recorder.client).rounds
    assert entry.registered == 3 and entry.contributors == ["hospital-0", "hospital-1", "hospital-2"]
    assert replay(recorder.client).problems == []


def test_unverified_baseline_round_is_recorded_as_such(recorder: Web3Recorder) -> None:
    """With verification off the engine takes every candidate unvoted; the ledger says so."""
    planned = plan_round(1, initial_weights(), MEMBERS, honest_except())
    decisions = [replace(d, accepts=0, rejects=0, unverified=True) for d in planned.decisions]
    outcome = replace(
        planned.outcome, votes=[], decisions=decisions, contributors=[h.hospital_id for h in MEMBERS]
    )
    recorder.open_round(1, planned.start_hash, planned.start, POLICY)
    for c in planned.commitments:
        recorder.record_commitment(c)
    recorder.record_votes([])
    recorder.record_decisions(decisions)
    recorder.finalize_round(outcome)
    history = replay(recorder.client)
    assert history.problems == []
    (entry,) = history.rounds
    assert entry.unverified and entry.votes == [] and len(entry.contributors) == 5

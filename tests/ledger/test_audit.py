"""The audit replays the ledger and catches changed blobs and decisions against the rules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.state.blobs import BlobStore
from ledger.audit import audit_chain
from ledger.blobs import BlobServer
from ledger.client import LedgerEvent
from ledger.explorer import list_blocks, list_events, verify_model_hash
from ledger.history import _Replay
from ledger.recorder import Web3Recorder
from ledger.session import LedgerSettings
from tests.ledger.rounds import PlannedRound, honest_except, hospitals, initial_weights, plan_round, record

MEMBERS = hospitals(4)


@pytest.fixture
def two_rounds(settings: LedgerSettings) -> Iterator[tuple[Web3Recorder, list[PlannedRound]]]:
    recorder = Web3Recorder.open(settings)
    recorder.register_hospitals(MEMBERS)
    first = plan_round(1, initial_weights(), MEMBERS, honest_except("hospital-1"))
    record(recorder, first)
    second = plan_round(2, first.outcome.global_weights, MEMBERS, honest_except())
    record(recorder, second)
    yield recorder, [first, second]
    recorder.close()


def test_audit_of_an_intact_ledger_is_ok(two_rounds: tuple[Web3Recorder, list[PlannedRound]]) -> None:
    recorder, _ = two_rounds
    report, history = audit_chain(recorder.client, recorder.blobs)
    assert report.ok and report.first_discrepancy is None
    # both rounds' global models and the model the first round started from
    assert (report.rounds_checked, report.blobs_checked) == (2, 3)
    assert report.events_checked == len(recorder.client.events())


def test_audit_catches_a_changed_blob_byte(two_rounds: tuple[Web3Recorder, list[PlannedRound]]) -> None:
    recorder, (first, _) = two_rounds
    path = recorder.blobs.path(first.outcome.global_hash)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x40
    path.write_bytes(bytes(data))
    report, _ = audit_chain(recorder.client, recorder.blobs)
    assert not report.ok
    assert report.first_discrepancy is not None
    assert report.first_discrepancy.startswith("round 1 ")
    assert "does not match the hash on the ledger" in report.first_discrepancy
    assert len(report.discrepancies) == 1


def test_audit_fetches_a_missing_blob_from_a_peer(
    two_rounds: tuple[Web3Recorder, list[PlannedRound]], tmp_path
) -> None:
    recorder, (_, second) = two_rounds
    empty = BlobStore(tmp_path / "fresh-hospital")
    report, _ = audit_chain(recorder.client, empty)
    assert not report.ok and "not in the blob store" in report.discrepancies[0]
    with BlobServer(recorder.blobs) as server:
        report, _ = audit_chain(recorder.client, empty, peers=[server.url])
    assert report.ok
    assert empty.verify(second.outcome.global_hash)


def test_explorer_lists_blocks_events_and_verifies_hashes(
    two_rounds: tuple[Web3Recorder, list[PlannedRound]],
) -> None:
    recorder, (first, second) = two_rounds
    blocks = list_blocks(recorder.client, limit=5)
    assert [b.number for b in blocks] == list(range(blocks[0].number, blocks[0].number - 5, -1))
    assert blocks[0].transactions[0].function == "finalizeRound" and blocks[0].transactions[0].succeeded
    events = list_events(recorder.client, limit=3)
    assert events[0].name == "RoundFinalized" and events[0].args["globalHash"] == second.outcome.global_hash
    assert [e.args["roundNumber"] for e in list_events(recorder.client, name="RoundOpened")] == [2, 1]
    assert verify_model_hash(recorder.client, first.outcome.global_hash)
    assert verify_model_hash(recorder.client, first.commitments[1].model_hash)  # a rejected candidate
    assert not verify_model_hash(recorder.client, "ab" * 32)


def _event(name: str, block: int, **args: object) -> LedgerEvent:
    return LedgerEvent(name=name, block_number=block, tx_hash="0x", log_index=0, args=dict(args))


def test_replay_flags_a_decision_against_the_majority_rule() -> None:
    """A 2-of-4 'accepted' decision (a tie) is a discrepancy even if a contract let it through."""
    replay = _Replay()
    for i in range(4):
        replay.apply(_event("AuthorityAdded", 1, account=f"0x{i}", hospitalId=f"h{i}"))
    replay.apply(
        _event("RoundOpened", 2, roundNumber=1, roundId=1, previousHash="00", policyDigest="11", registered=4)
    )
    replay.apply(
        _event(
            "Committed",
            3,
            roundNumber=1,
            roundId=1,
            hospital="0x0",
            modelHash="aa",
            sharesDigest="bb",
            shares=[],
        )
    )
    for i, accept in enumerate([True, True, False, False]):
        replay.apply(
            _event(
                "Voted",
                4,
                roundId=1,
                candidate="0x0",
                validator=f"0x{i}",
                accept=accept,
                correct=1,
                total=2,
                cosine=0,
                norm=0,
                referenceAccuracy=0,
                referenceNorm=0,
            )
        )
    replay.apply(
        _event(
            "Decided",
            5,
            roundId=1,
            candidate="0x0",
            modelHash="aa",
            accepts=2,
            rejects=2,
            registered=4,
            accepted=True,
        )
    )
    replay.apply(_event("RoundFinalized", 6, roundNumber=1, roundId=1, globalHash="cc", contributors=[]))
    assert replay.problems[0] == (
        "block 5, Decided: h0 in round 1: accepted against the majority rule (2 of 4 accept)"
    )
    assert "contributors [] are not the accepted models ['h0']" in replay.problems[1]

"""`ledger audit` over real rounds on the embedded chain: an intact home passes; a changed blob
byte, a deleted starting model, a changed SQLite row, a ballot that no longer opens and a policy
threshold changed under its digest each fail it, naming the discrepancy. The replay's rules are
also checked on hand-made event streams a correct contract would never emit."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from core.federation.policy import VerificationPolicy
from core.federation.roles.ballots import Ballot
from core.federation.types import Scores
from core.services.ledger_audit import (
    _check_ballot,
    audit_as_dict,
    audit_ledger,
    format_audit,
    format_show,
    is_model_on_ledger,
    recent_blocks,
    recent_events,
    show_ledger,
)
from core.settings import Settings, load_settings
from ledger.client import LedgerEvent, RoundPhase
from ledger.history import LedgerHistory, RoundEntry, VoteEntry, replay_events
from tests.ledger.federations import SITE, Recorded, run_rounds, small_config


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recorded]:
    """A home with two rounds on the embedded chain (hospital-3 attacks and is rejected), the
    site hospital-1's ballots in its SQLite, and a `--no-ledger` run beside them."""
    home = tmp_path_factory.mktemp("template") / "home"
    settings = load_settings(home=home)
    recorded = run_rounds(settings, small_config())
    run_rounds(settings, small_config(rounds=1, ledger=False))
    return home, recorded


@pytest.fixture
def home(template: tuple[Path, Recorded], tmp_path: Path) -> tuple[Settings, Recorded]:
    """A private copy of the template's home, free to damage."""
    copy = tmp_path / "home"
    shutil.copytree(template[0], copy)
    return load_settings(home=copy), template[1]


def _first(settings: Settings) -> str:
    result = audit_ledger(settings)
    assert not result.ok and result.first_discrepancy is not None
    assert format_audit(result).startswith("ledger audit FAILED")
    assert audit_as_dict(result)["first_discrepancy"] == result.first_discrepancy
    return result.first_discrepancy


def test_an_intact_home_passes_the_audit(home: tuple[Settings, Recorded]) -> None:
    settings, recorded = home
    result = audit_ledger(settings)
    assert result.ok, result.discrepancies
    assert result.rounds_compared == 2 and result.ballots_checked == 6  # every validator, both rounds
    assert result.chain.blobs_checked == 3  # the initial model and both global models
    assert result.notes[0] == "federation 2 was recorded without the ledger; not compared"
    assert all("a simulated attacker" in n for n in result.notes[1:]) and len(result.notes) == 3  # its 2 votes
    assert format_audit(result).startswith("ledger audit OK: ")
    history = show_ledger(settings)
    assert [(r.number, r.state, r.contributors) for r in history.rounds] == [
        (1, "finalized", ["hospital-1", "hospital-2"]), (2, "finalized", ["hospital-1", "hospital-2"])]
    shown = format_show(history).splitlines()
    assert any(line.startswith("  model hospital-3 ") and line.endswith("rejected 1/3") for line in shown)
    assert "  vote hospital-3: accepts hospital-3" in "\n".join(shown)


def test_a_changed_byte_in_a_global_model_is_named(home: tuple[Settings, Recorded]) -> None:
    settings, recorded = home
    digest = recorded.report[0]["global_hash"]
    path = settings.blob_dir / digest
    data = bytearray(path.read_bytes())
    data[100] ^= 0x40
    path.write_bytes(bytes(data))
    first = _first(settings)
    assert first.startswith(f"round 1 (attempt 1) global model {digest}: ") and "does not hash to it" in first


def test_a_deleted_starting_model_is_named(home: tuple[Settings, Recorded]) -> None:
    settings, recorded = home
    digest = recorded.report[0]["previous_hash"]  # the consortium's initial model
    (settings.blob_dir / digest).unlink()
    assert _first(settings) == (f"round 1 (attempt 1) starting model {digest} is not in the blob store "
                                f"{settings.blob_dir}")


def test_a_changed_byte_in_the_starting_model_fails_like_its_deletion(home: tuple[Settings, Recorded]) -> None:
    # One rule for every model the home must hold: missing or changed, the audit fails and names
    # the hash the ledger records as that, and the tampered file's own hash as the file's.
    settings, recorded = home
    digest = recorded.report[0]["previous_hash"]  # the consortium's initial model
    path = settings.blob_dir / digest
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    tampered = hashlib.sha256(bytes(data)).hexdigest()
    assert _first(settings) == (f"round 1 (attempt 1) starting model {digest}: the stored file {path} does not "
                                f"hash to it, the hash on the ledger; its bytes hash to {tampered}")
    path.unlink()
    assert _first(settings).startswith(f"round 1 (attempt 1) starting model {digest} is not in the blob store")


def test_a_changed_candidate_blob_is_named(home: tuple[Settings, Recorded]) -> None:
    settings, _ = home
    model = show_ledger(settings).rounds[1].commitment_of("hospital-3")
    assert model is not None
    path = settings.blob_dir / model.model_hash
    path.write_bytes(path.read_bytes()[:-1])
    assert _first(settings).startswith(f"round 2 (attempt 2) hospital-3's candidate {model.model_hash}: ")


def _sql(settings: Settings, statement: str, *params: object) -> None:
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute(statement, params).rowcount == 1


def test_a_changed_vote_in_sqlite_is_named(home: tuple[Settings, Recorded]) -> None:
    settings, _ = home
    _sql(settings, "UPDATE votes SET accept = 1 WHERE validator_id = 'hospital-1' AND candidate_id = 'hospital-3' "
                   "AND round_id = (SELECT id FROM rounds WHERE number = 1 AND federation_id = 1)")
    assert _first(settings) == ("federation 1 round 1: hospital-1's vote on hospital-3 is accept locally, "
                                "reject on the ledger")


def test_a_changed_decision_in_sqlite_is_named(home: tuple[Settings, Recorded]) -> None:
    settings, _ = home
    _sql(settings, "UPDATE model_records SET status = 'accepted', accepts = 2 WHERE hospital_id = 'hospital-3' "
                   "AND round_id = (SELECT id FROM rounds WHERE number = 2 AND federation_id = 1)")
    assert _first(settings) == ("federation 1 round 2: hospital-3's model is accepted locally, rejected on the "
                                "ledger")


def _node_document(settings: Settings) -> dict:
    with sqlite3.connect(settings.db_path) as conn:
        (raw,) = conn.execute("SELECT document FROM role_states WHERE role = 'node' AND federation_id = 1").fetchone()
    return json.loads(raw)


def test_a_ballot_whose_scores_changed_no_longer_opens(home: tuple[Settings, Recorded]) -> None:
    settings, _ = home
    document = _node_document(settings)
    ballot = document["ballots"]["2"]
    ballot["scores"]["hospital-3"]["norm"] = 0.5  # as if hospital-1 claimed the attacker's update was small
    _sql(settings, "UPDATE role_states SET document = ? WHERE role = 'node' AND federation_id = 1", json.dumps(document))
    hash_on_chain = show_ledger(settings).rounds[1].vote_of(SITE)
    assert hash_on_chain is not None
    assert _first(settings) == (f"{SITE}'s ballot in round 2 (attempt 2) does not open to its scores hash "
                                f"{hash_on_chain.scores_hash} on the ledger")


def test_a_policy_threshold_changed_under_its_digest_is_named(home: tuple[Settings, Recorded]) -> None:
    settings, _ = home
    with sqlite3.connect(settings.db_path) as conn:
        (raw,) = conn.execute("SELECT policy FROM rounds WHERE federation_id = 1 AND number = 1").fetchone()
    policy = json.loads(raw)
    policy["max_norm_ratio"] = 100.0  # the attacker's scaled update would pass; the digest is left as it was
    _sql(settings, "UPDATE rounds SET policy = ? WHERE federation_id = 1 AND number = 1", json.dumps(policy))
    first = _first(settings)
    assert first.startswith("federation 1 round 1: the verification policy recorded here")
    assert f"({policy['digest']})" in first  # the digest the round ran under, on chain


def test_the_explorer_reads_events_in_words(home: tuple[Settings, Recorded]) -> None:
    settings, recorded = home
    events = recent_events(settings, limit=500)
    decided = [e for e in events if e.name == "Decided"]
    assert [e.round_number for e in decided] == [2, 1]
    assert decided[0].details["accepted"] == ["hospital-1", "hospital-2"]
    assert decided[0].details["rejected"] == ["hospital-3"]
    assert decided[0].details["accepts"] == {"hospital-1": 2, "hospital-2": 2, "hospital-3": 1}
    voted = next(e for e in events if e.name == "Voted" and e.who == "hospital-3")
    assert voted.details["accepted"] == ["hospital-3"]
    assert [e.name for e in recent_events(settings, limit=1)] == ["RoundFinalized"]
    block = recent_blocks(settings, limit=1)[0]
    assert [t.function for t in block.transactions] == ["finalizeRound"]
    assert is_model_on_ledger(settings, recorded.report[1]["global_hash"])
    assert not is_model_on_ledger(settings, "ab" * 32)


# -- the replay's rules on event streams a correct contract never emits ---------------------------------

A, B, C, D = (f"0x{i:040x}" for i in range(1, 5))
HASH = {name: name * 32 for name in ("aa", "bb", "cc", "dd", "ee")}


def _e(name: str, block: int, **args: object) -> LedgerEvent:
    return LedgerEvent(name=name, block_number=block, tx_hash="0x", log_index=0, args=dict(args))


def _round(votes: list[int], *, decided_bitmap: int, accepts: list[int], rejects: list[int],
           contributors: list[str]) -> list[LedgerEvent]:
    """Four hospitals; A and B commit; the votes are bitmaps over [A, B]; then decided and finalised."""
    r = {"roundNumber": 1, "roundId": 1}
    events = [_e("AuthorityAdded", 1, account=acct, hospitalId=f"h{i}", storeUrl="")
              for i, acct in enumerate((A, B, C, D))]
    events.append(_e("RoundOpened", 2, **r, previousHash=HASH["aa"], policyDigest=HASH["bb"], registered=4,
                     commitDeadline=10, voteDeadline=20, finalDeadline=30, verified=True))
    events += [_e("Committed", 3, **r, hospital=acct, modelHash=HASH[h], numSamples=5, shares=[])
               for acct, h in ((A, "cc"), (B, "dd"))]
    events.append(_e("CommitsClosed", 4, **r, candidates=[A, B], dropouts=[C, D]))
    voters = (A, B, C, D)[: len(votes)]
    events += [_e("Voted", 5, **r, validator=v, acceptedBitmap=bits, scoresHash=HASH["ee"])
               for v, bits in zip(voters, votes, strict=True)]
    events.append(_e("Decided", 6, **r, registered=4, acceptedBitmap=decided_bitmap, accepts=accepts,
                     rejects=rejects, abstainers=[x for x in (A, B, C, D) if x not in voters], unverified=False))
    events.append(_e("RoundFinalized", 7, **r, globalHash=HASH["ee"], contributors=contributors))
    return events


def test_replay_of_a_correct_round_finds_nothing() -> None:
    state = replay_events(_round([0b11, 0b11, 0b11], decided_bitmap=0b11, accepts=[3, 3], rejects=[0, 0],
                                 contributors=[A, B]))
    assert state.problems == []
    assert state.rounds[1].phase is RoundPhase.FINAL and state.rounds[1].accepted == ["h0", "h1"]


def test_replay_flags_a_tie_accepted_against_the_majority_rule() -> None:
    """2 of 4 is no majority: the absent votes do not accept."""
    state = replay_events(_round([0b01, 0b01], decided_bitmap=0b01, accepts=[2, 0], rejects=[0, 2],
                                 contributors=[A]))
    assert state.problems == ["block 6, Decided: h0 in round 1 (attempt 1): accepted against the majority rule "
                              "(2 of 4 accept)"]


def test_replay_flags_counts_that_are_not_the_voted_bitmaps() -> None:
    state = replay_events(_round([0b11, 0b11, 0b01], decided_bitmap=0b11, accepts=[3, 3], rejects=[0, 0],
                                 contributors=[A, B]))
    assert state.problems == [
        "block 6, Decided: h1 in round 1 (attempt 1): decision counts 3/0 but the Voted bitmaps give 2/1",
        "block 6, Decided: h1 in round 1 (attempt 1): accepted against the majority rule (2 of 4 accept)"]


def test_replay_flags_contributors_that_are_not_the_accepted() -> None:
    state = replay_events(_round([0b11, 0b11, 0b11], decided_bitmap=0b11, accepts=[3, 3], rejects=[0, 0],
                                 contributors=[A]))
    assert state.problems == ["block 7, RoundFinalized: round 1 (attempt 1): contributors ['h0'] are not the "
                              "accepted candidates ['h0', 'h1']"]


def test_replay_flags_events_out_of_the_state_machine_order() -> None:
    events = _round([0b11, 0b11, 0b11], decided_bitmap=0b11, accepts=[3, 3], rejects=[0, 0], contributors=[A, B])
    closed = next(i for i, e in enumerate(events) if e.name == "CommitsClosed")
    early_vote = events.pop(closed + 1)
    events.insert(closed, early_vote)  # a vote before the commits closed
    problems = replay_events(events).problems
    assert problems[0] == "block 5, Voted: round 1 (attempt 1) is in phase commit"
    late = _round([0b11, 0b11, 0b11], decided_bitmap=0b11, accepts=[3, 3], rejects=[0, 0], contributors=[A, B])
    late.append(_e("Voted", 8, roundNumber=1, roundId=1, validator=D, acceptedBitmap=1, scoresHash=HASH["ee"]))
    assert replay_events(late).problems == ["block 8, Voted: round 1 (attempt 1) is not open"]


def test_replay_flags_a_round_not_starting_from_the_last_global_model() -> None:
    events = _round([0b11, 0b11, 0b11], decided_bitmap=0b11, accepts=[3, 3], rejects=[0, 0], contributors=[A, B])
    events.append(_e("RoundOpened", 8, roundNumber=2, roundId=2, previousHash=HASH["aa"], policyDigest=HASH["bb"],
                     registered=4, commitDeadline=40, voteDeadline=50, finalDeadline=60, verified=True))
    assert replay_events(events).problems == [
        f"block 8, RoundOpened: round 2 starts from {HASH['aa']}, not from round 1's global model {HASH['ee']}"]


# -- the policy rule on ballots ---------------------------------------------------------------------------


def _scores(norm: float) -> Scores:
    return Scores(correct=45, total=50, cosine=0.5, norm=norm, reference_accuracy=0.9, reference_norm=1.0)


@pytest.mark.parametrize(("accepted", "problem"), [
    (("h0",), None),
    (("h0", "h1"), "h2's ballot in round 1 (attempt 1) accepts ['h0', 'h1'], but the round's policy accepts "
                   "['h0'] for its scores"),
])
def test_a_ballot_must_accept_what_the_policy_gives_for_its_scores(
        accepted: tuple[str, ...], problem: str | None) -> None:
    policy = VerificationPolicy()
    ballot = Ballot(1, 1, "h2", accepted, {"h0": _scores(1.0), "h1": _scores(30.0)})
    entry = RoundEntry(round_id=1, number=1, phase=RoundPhase.FINAL, previous_hash=HASH["aa"],
                       policy_digest=policy.digest(), registered=3, verified=True, deadlines=(1, 2, 3),
                       opened_block=1, candidates=["h0", "h1"],
                       votes=[VoteEntry("h2", C, list(accepted), ballot.scores_hash, 5)])
    history = LedgerHistory("0x", 1, "test", 9, {}, [entry], 7)
    local_round = type("LocalRound", (), {"number": 1, "policy": policy.as_dict()})()
    assert _check_ballot(ballot, history, [local_round], None, []) == problem  # type: ignore[list-item]


@pytest.mark.parametrize("field", ["correct", "cosine"])
def test_a_vote_score_changed_in_sqlite_is_named(field: str, home: tuple[Settings, Recorded]) -> None:
    settings, _ = home
    where = ("validator_id = 'hospital-2' AND candidate_id = 'hospital-3' "
             "AND round_id = (SELECT id FROM rounds WHERE number = 1 AND federation_id = 1)")
    with sqlite3.connect(settings.db_path) as conn:
        (raw,) = conn.execute(f"SELECT scores FROM votes WHERE {where}").fetchone()
    scores = json.loads(raw)
    assert scores, "a simulated validator's scores are recorded with its vote"
    scores[field] = scores[field] + 1.0
    _sql(settings, f"UPDATE votes SET scores = ? WHERE {where}", json.dumps(scores))
    assert _first(settings) == ("the scores recorded for hospital-2's vote on hospital-3 in round 1 are not those "
                                "of its ballot (which opens to the ledger's hash)")


def test_a_simulated_attackers_ballots_are_noted_not_failed(home: tuple[Settings, Recorded]) -> None:
    settings, _ = home
    result = audit_ledger(settings)
    assert result.ok, result.discrepancies
    assert any("hospital-3's ballot" in n and "a simulated attacker" in n for n in result.notes)

"""One contract suite for every `RoundChannel`: the in-memory one and the ledger's.

A test module subclasses `ChannelContract` and provides a `harness` fixture (see
`ChannelHarness`); every rule of `core.federation.channel` is checked the same way on both.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import pytest

from core.federation.channel import (
    COORDINATOR,
    Aborted,
    AlreadyDone,
    Committed,
    CommitsClosed,
    Decided,
    Finalized,
    Phase,
    PhaseError,
    RoundChannel,
    RoundOpened,
    RoundTiming,
    Voted,
)

TIMING = RoundTiming(commit_seconds=100, vote_seconds=100, aggregate_seconds=100)
PREV = "11" * 32
POLICY = "22" * 32


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ChannelHarness(Protocol):
    def register(self, hospital_ids: list[str]) -> None: ...
    def deregister(self, hospital_id: str) -> None: ...
    def channel(self, identity: str) -> RoundChannel: ...
    def advance(self, seconds: float) -> None: ...


class ChannelContract:
    """Subclasses supply `harness` (a fixture returning a fresh ChannelHarness)."""

    @pytest.fixture
    def fed(self, harness: ChannelHarness) -> ChannelHarness:
        harness.register(["h1", "h2", "h3"])
        return harness

    def _open(self, fed: ChannelHarness, number: int = 1) -> None:
        fed.channel(COORDINATOR).open_round(number, PREV, POLICY, TIMING)

    def _commit_all(self, fed: ChannelHarness, ids: list[str], number: int = 1) -> None:
        for i, hid in enumerate(ids):
            fed.channel(hid).commit(number, h(hid + str(number)), 10 * (i + 1), [h("s" + hid)])

    def test_a_full_round_emits_every_step_in_order(self, fed: ChannelHarness) -> None:
        coord = fed.channel(COORDINATOR)
        self._open(fed)
        self._commit_all(fed, ["h1", "h2", "h3"])
        coord.close_commits(1)  # everyone committed: no need to wait for the deadline
        fed.channel("h1").vote(1, ["h1", "h2"], h("scores1"))
        fed.channel("h2").vote(1, ["h1", "h2"], h("scores2"))
        fed.channel("h3").vote(1, ["h1", "h3"], h("scores3"))
        coord.decide(1)
        view = coord.round(1)
        assert view is not None and view.phase is Phase.AGGREGATE
        assert set(view.accepted) == {"h1", "h2"}
        coord.finalize(1, h("global"), ["h2", "h1"])
        events, position = coord.events(0)
        kinds = [type(e) for e in events if not type(e).__name__.startswith("Membership")]
        assert kinds == [RoundOpened, Committed, Committed, Committed, CommitsClosed, Voted, Voted, Voted,
                         Decided, Finalized]
        committed = [e for e in events if isinstance(e, Committed)]
        assert [c.hospital_id for c in committed] == ["h1", "h2", "h3"]
        assert committed[1].num_samples == 20 and committed[1].share_commitments == (h("sh2"),)
        decided = next(e for e in events if isinstance(e, Decided))
        by_id = {d.candidate_id: d for d in decided.decisions}
        assert (by_id["h1"].accepts, by_id["h1"].rejects, by_id["h1"].accepted) == (3, 0, True)
        assert (by_id["h3"].accepts, by_id["h3"].accepted) == (1, False)
        assert by_id["h2"].model_hash == h("h21")
        voted = [e for e in events if isinstance(e, Voted)]
        assert voted[2].accepted == ("h1", "h3") and voted[2].scores_hash == h("scores3")
        final = coord.round(1)
        assert final is not None and final.phase is Phase.FINAL and final.global_hash == h("global")
        again, same = coord.events(position)
        assert again == [] and same == position
        assert coord.events(0)[0] == events  # reading twice gives the same events

    def test_a_hospital_without_a_commitment_by_the_deadline_is_a_dropout(self, fed: ChannelHarness) -> None:
        coord = fed.channel(COORDINATOR)
        self._open(fed)
        self._commit_all(fed, ["h1", "h2"])
        with pytest.raises(PhaseError) as refused:
            coord.close_commits(1)
        assert "deadline" in refused.value.reason
        fed.advance(101)
        with pytest.raises(PhaseError):
            fed.channel("h3").commit(1, h("late"), 5)
        fed.channel("h2").close_commits(1)  # anyone may close a phase once its deadline passed
        closed = [e for e in coord.events(0)[0] if isinstance(e, CommitsClosed)]
        assert closed[0].candidates == ("h1", "h2") and closed[0].dropouts == ("h3",)
        view = coord.round(1)
        assert view is not None and view.phase is Phase.VOTE and view.candidates == ("h1", "h2")

    def test_absent_votes_do_not_accept_and_the_majority_is_of_all_registered(self, fed: ChannelHarness) -> None:
        coord = fed.channel(COORDINATOR)
        self._open(fed)
        self._commit_all(fed, ["h1", "h2", "h3"])
        coord.close_commits(1)
        fed.channel("h1").vote(1, ["h1", "h2"], h("a"))
        with pytest.raises(PhaseError):
            coord.decide(1)  # the deadline has not passed and h2, h3 have not voted
        fed.advance(201)
        with pytest.raises(PhaseError):
            fed.channel("h2").vote(1, ["h1"], h("b"))
        fed.channel("h3").decide(1)
        decided = next(e for e in coord.events(0)[0] if isinstance(e, Decided))
        assert all(not d.accepted for d in decided.decisions)  # 1 accept of 3 registered
        assert set(decided.abstained) == {"h2", "h3"}

    def test_every_call_is_done_once(self, fed: ChannelHarness) -> None:
        coord = fed.channel(COORDINATOR)
        self._open(fed)
        with pytest.raises(AlreadyDone):
            self._open(fed)
        self._commit_all(fed, ["h1", "h2", "h3"])
        with pytest.raises(AlreadyDone):
            fed.channel("h1").commit(1, h("other"), 1)
        coord.close_commits(1)
        with pytest.raises(AlreadyDone):
            coord.close_commits(1)
        for hid in ("h1", "h2", "h3"):
            fed.channel(hid).vote(1, ["h1", "h2", "h3"], h(hid))
        with pytest.raises(AlreadyDone):
            fed.channel("h1").vote(1, [], h("again"))
        coord.decide(1)
        with pytest.raises(AlreadyDone):
            coord.decide(1)
        coord.finalize(1, h("g"), ["h1", "h2", "h3"])
        with pytest.raises(AlreadyDone):
            coord.finalize(1, h("g"), ["h1", "h2", "h3"])

    def test_only_the_coordinator_opens_and_finalises(self, fed: ChannelHarness) -> None:
        with pytest.raises(PhaseError):
            fed.channel("h1").open_round(1, PREV, POLICY, TIMING)
        self._open(fed)
        self._commit_all(fed, ["h1", "h2", "h3"])
        fed.channel("h1").close_commits(1)
        for hid in ("h1", "h2", "h3"):
            fed.channel(hid).vote(1, ["h1"], h(hid))
        fed.channel("h1").decide(1)
        with pytest.raises(PhaseError):
            fed.channel("h1").finalize(1, h("g"), ["h1"])

    def test_contributors_must_be_exactly_the_accepted(self, fed: ChannelHarness) -> None:
        coord = fed.channel(COORDINATOR)
        self._open(fed)
        self._commit_all(fed, ["h1", "h2", "h3"])
        coord.close_commits(1)
        for hid in ("h1", "h2", "h3"):
            fed.channel(hid).vote(1, ["h1", "h2"], h(hid))
        coord.decide(1)
        for wrong in (["h1"], ["h1", "h2", "h3"], ["h1", "h1"]):
            with pytest.raises(PhaseError):
                coord.finalize(1, h("g"), wrong)
        coord.finalize(1, h("g"), ["h1", "h2"])

    def test_a_vote_names_only_the_rounds_candidates(self, fed: ChannelHarness) -> None:
        coord = fed.channel(COORDINATOR)
        self._open(fed)
        self._commit_all(fed, ["h1", "h2"])
        fed.advance(101)
        coord.close_commits(1)
        with pytest.raises(PhaseError):
            fed.channel("h1").vote(1, ["h3"], h("x"))  # h3 dropped out: not a candidate

    def test_no_commitment_aborts_and_the_number_can_be_reopened(self, fed: ChannelHarness) -> None:
        coord = fed.channel(COORDINATOR)
        self._open(fed)
        fed.advance(101)
        coord.close_commits(1)
        first = coord.round(1)
        assert first is not None and first.phase is Phase.ABORTED
        assert any(isinstance(e, Aborted) for e in coord.events(0)[0])
        self._open(fed)
        second = coord.round(1)
        assert second is not None and second.phase is Phase.COMMIT and second.attempt != first.attempt
        fed.channel("h1").commit(1, h("again"), 3)

    def test_abort_by_the_coordinator_or_by_anyone_past_the_last_deadline(self, fed: ChannelHarness) -> None:
        coord = fed.channel(COORDINATOR)
        self._open(fed)
        with pytest.raises(PhaseError):
            fed.channel("h1").abort(1, "impatient")
        coord.abort(1, "operator stopped the round")
        self._open(fed)
        fed.advance(301)
        fed.channel("h2").abort(1, "the coordinator is gone")
        view = coord.round(1)
        assert view is not None and view.phase is Phase.ABORTED
        reasons = [e.reason for e in coord.events(0)[0] if isinstance(e, Aborted)]
        assert reasons == ["operator stopped the round", "the coordinator is gone"]

    def test_the_registry_changes_only_between_rounds(self, fed: ChannelHarness) -> None:
        self._open(fed)
        with pytest.raises(PhaseError):
            fed.register(["h4"])
        fed.channel(COORDINATOR).abort(1, "membership change")
        fed.register(["h4"])
        assert {m.hospital_id for m in fed.channel("h1").members()} == {"h1", "h2", "h3", "h4"}
        self._open(fed)
        view = fed.channel("h1").round(1)
        assert view is not None and view.registered == 4

    def test_an_unregistered_identity_cannot_commit_or_vote(self, fed: ChannelHarness) -> None:
        self._open(fed)
        with pytest.raises(PhaseError):
            fed.channel("stranger").commit(1, h("x"), 1)

    def test_blobs_are_content_addressed_and_checked(self, fed: ChannelHarness) -> None:
        digest = fed.channel("h1").put_blob(b"model bytes")
        assert digest == hashlib.sha256(b"model bytes").hexdigest()
        assert fed.channel("h2").get_blob(digest, owner="h1") == b"model bytes"
        with pytest.raises(Exception):
            fed.channel("h2").get_blob(h("absent"), owner="h1")

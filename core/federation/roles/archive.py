"""`RoundArchive`: follows the channel's events into a local `Recorder` (the SQLite state).

Every process runs one: a hospital's node keeps its own record of every round (who committed,
who voted what, every decision, the global model and its accuracy on the own test data); the
simulation keeps one for the whole federation. The chain is the truth and this is its local
copy: the archive reads from the cursor it stored, its handlers are safe to run twice, and the
scores behind a vote are the ones this process knows (its own ballots; in a simulation, all).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.federation.channel import (
    COORDINATOR,
    Aborted,
    Committed,
    CommitsClosed,
    Decided,
    Event,
    Finalized,
    MembershipChanged,
    RoundChannel,
    RoundEvent,
    RoundOpened,
    Voted,
)
from core.federation.interfaces import Recorder
from core.federation.policy import VerificationPolicy
from core.federation.roles.node import fetch_weights
from core.federation.roles.state import MemoryRoleState, RoleState
from core.federation.types import (
    Commitment,
    Decision,
    Failure,
    HospitalInfo,
    RoundOutcome,
    Scores,
    Vote,
)
from core.errors import describe_error
from core.models.weights import Weights
from core.progress import Progress, ProgressSink, Stage, ignore_progress

log = logging.getLogger(__name__)

ScoreSource = Callable[[int, str], dict[str, Scores] | None]  # (attempt, validator) -> its scores
FailureSource = Callable[[int, str], str | None]  # (attempt, hospital) -> why it did not commit
Evaluate = Callable[[Weights], dict[str, float]]


def no_scores(attempt: int, validator_id: str) -> dict[str, Scores] | None:
    return None


def no_failures(attempt: int, hospital_id: str) -> str | None:
    return None


@dataclass
class _Attempt:
    opened: RoundOpened
    started: float
    commitments: list[Commitment] = field(default_factory=list)
    candidates: tuple[str, ...] = ()
    votes: list[Vote] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    mark: float = 0.0


class RoundArchive:
    def __init__(
        self,
        channel: RoundChannel,
        recorder: Recorder,
        policy: VerificationPolicy,
        *,
        evaluate: Evaluate | None = None,
        scores: ScoreSource = no_scores,
        failures: FailureSource = no_failures,
        hospitals: dict[str, HospitalInfo] | None = None,
        state: RoleState | None = None,
        progress: ProgressSink = ignore_progress,
        from_round: int = 1,
        carried: dict[int, Recorder] | None = None,
    ) -> None:
        self.channel = channel
        self.from_round = from_round  # earlier rounds belong to an earlier run's record
        # Rounds an earlier run of this home stopped in (killed, or gave up): their record is
        # carried on in that run's recorder, from the chain, and not started again here.
        self.carried = dict(carried or {})
        self.recorder = recorder
        self.policy = policy
        self.evaluate = evaluate
        self.scores = scores
        self.failures = failures
        self.hospitals = dict(hospitals or {})
        self.state = state or MemoryRoleState()
        self.progress = progress
        self.outcomes: list[RoundOutcome] = []  # the rounds finalised while this archive followed
        self.aborted: list[Aborted] = []
        # attempt -> stage -> seconds the roles of this process spent on it (filled by the runner)
        self.timings: dict[int, dict[str, float]] = {}
        self._attempts: dict[int, _Attempt] = {}
        self._doc: dict[str, Any] = self.state.load()

    @property
    def cursor(self) -> int:
        return int(self._doc.get("cursor", 0))

    def step(self) -> bool:
        """Records every event since the stored cursor; True when there were any. When one cannot
        be recorded yet (a model store unreachable), the cursor stays: the handlers are safe to
        run twice, so the next step takes the same events again."""
        events, position = self.channel.events(self.cursor)
        for event in events:
            try:
                self._handle(event)
            except Exception as exc:  # noqa: BLE001 - retried from the same cursor on the next step
                log.warning("could not record %s yet: %s", type(event).__name__, describe_error(exc))
                self._attempts.clear()  # rebuilt from the chain when the events come again
                return False
        if position != self.cursor:
            self._doc["cursor"] = position
            self.state.save(self._doc)
        return bool(events)

    # -- handlers (each safe to run twice) ----------------------------------------------------------

    def _handle(self, event: Event) -> None:
        if isinstance(event, MembershipChanged):
            self.recorder.register_hospitals([
                self.hospitals.get(m.hospital_id, HospitalInfo(m.hospital_id, m.hospital_id, account=m.account))
                for m in event.members
            ])
            return
        if event.round_number < self.from_round and event.round_number not in self.carried:
            return
        self._handle_round_event(event, self.carried.get(event.round_number, self.recorder))

    def _handle_round_event(self, event: RoundEvent, recorder: Recorder) -> None:
        if isinstance(event, RoundOpened):
            self._opened(event, recorder)
            return
        entry = self._attempts.get(event.attempt)
        if entry is None:
            # Opened before this archive's cursor and not rebuilt: a restart mid-round. The round
            # is rebuilt from its opening event, which the chain still holds.
            entry = self._rebuild(event.attempt)
            if entry is None:
                log.warning("event of an unknown round attempt %d skipped", event.attempt)
                return
        n = event.round_number
        if isinstance(event, Committed):
            commitment = Commitment(event.hospital_id, n, event.model_hash, event.share_commitments)
            if commitment not in entry.commitments:
                entry.commitments.append(commitment)
            recorder.record_commitment(commitment)
            self.progress(Progress(Stage.COMMITMENT, f"{event.hospital_id} committed {event.model_hash[:12]}",
                                   round_number=n, hospital_id=event.hospital_id))
        elif isinstance(event, CommitsClosed):
            entry.candidates = event.candidates
            self._lap(entry, "training")
            for hid in event.dropouts:
                why = self.failures(event.attempt, hid) or "no commitment by the deadline"
                self._fail(recorder, entry, Failure(n, hid, Stage.TRAINING.value, why))
            self.progress(Progress(Stage.VERIFICATION, f"{len(event.candidates)} candidate(s), "
                                   f"{len(event.dropouts)} dropout(s)", round_number=n))
        elif isinstance(event, Voted):
            known = self.scores(event.attempt, event.validator_id) or {}
            votes = [Vote(n, event.validator_id, c, c in event.accepted, known.get(c)) for c in entry.candidates]
            entry.votes = [v for v in entry.votes if v.validator_id != event.validator_id] + votes
            recorder.record_votes(votes)
        elif isinstance(event, Decided):
            self._lap(entry, "verification")
            entry.decisions = [
                Decision(n, d.candidate_id, d.model_hash, d.accepts, d.rejects, event.registered,
                         unverified=event.unverified)
                for d in event.decisions
            ]
            recorder.record_decisions(entry.decisions)
            for hid in event.abstained:
                if any(c.hospital_id == hid for c in entry.commitments):
                    self._fail(recorder, entry, Failure(n, hid, Stage.VOTING.value, "no vote by the deadline"))
            accepted = sum(1 for d in entry.decisions if d.accepted)
            self.progress(Progress(Stage.VOTING, f"{accepted} of {len(entry.decisions)} candidate(s) accepted",
                                   round_number=n))
        elif isinstance(event, Finalized):
            self._finalized(recorder, entry, event)
        elif isinstance(event, Aborted):
            recorder.abort_round(n, event.reason)
            self.aborted.append(event)
            self._attempts.pop(event.attempt, None)
            self.progress(Progress(Stage.FAILED, f"round {n} aborted: {event.reason}", round_number=n))

    def _opened(self, event: RoundOpened, recorder: Recorder) -> None:
        if event.policy_digest != self.policy.digest():
            log.warning("round %d runs under policy %s, not this hospital's %s", event.round_number,
                        event.policy_digest[:12], self.policy.digest()[:12])
        weights = fetch_weights(self.channel, event.previous_hash, COORDINATOR)
        recorder.open_round(event.round_number, event.previous_hash, weights, self.policy)
        now = time.perf_counter()
        self._attempts[event.attempt] = _Attempt(event, now, mark=now)

    def _rebuild(self, attempt: int) -> _Attempt | None:
        """Replays one attempt's events from the start of the chain into memory (not the recorder,
        which holds them already)."""
        events, _ = self.channel.events(0)
        entry: _Attempt | None = None
        for e in events:
            if isinstance(e, MembershipChanged) or e.attempt != attempt:
                continue
            if isinstance(e, RoundOpened):
                entry = _Attempt(e, time.perf_counter(), mark=time.perf_counter())
            elif entry is None:
                continue
            elif isinstance(e, Committed):
                entry.commitments.append(Commitment(e.hospital_id, e.round_number, e.model_hash,
                                                    e.share_commitments))
            elif isinstance(e, CommitsClosed):
                entry.candidates = e.candidates
            elif isinstance(e, Voted):
                known = self.scores(e.attempt, e.validator_id) or {}
                entry.votes.extend(Vote(e.round_number, e.validator_id, c, c in e.accepted, known.get(c))
                                   for c in entry.candidates)
            elif isinstance(e, Decided):
                entry.decisions = [Decision(e.round_number, d.candidate_id, d.model_hash, d.accepts,
                                            d.rejects, e.registered, unverified=e.unverified)
                                   for d in e.decisions]
            else:
                break  # the event being handled now
        if entry is not None:
            self._attempts[attempt] = entry
        return entry

    def _finalized(self, recorder: Recorder, entry: _Attempt, event: Finalized) -> None:
        self._lap(entry, "aggregation")
        weights = fetch_weights(self.channel, event.global_hash, COORDINATOR)
        metrics = self.evaluate(weights) if self.evaluate is not None else {}
        outcome = RoundOutcome(
            round_number=event.round_number,
            previous_hash=entry.opened.previous_hash,
            global_hash=event.global_hash,
            global_weights=weights,
            contributors=list(event.contributors),
            decisions=list(entry.decisions),
            votes=list(entry.votes),
            commitments=list(entry.commitments),
            failures=list(entry.failures),
            metrics=metrics,
            durations=self.timings.pop(event.attempt, None) or dict(entry.durations),
        )
        recorder.finalize_round(outcome)
        self.outcomes.append(outcome)
        self._attempts.pop(event.attempt, None)
        self.progress(Progress(Stage.DONE, f"round {event.round_number} finalised: {len(event.contributors)} "
                               f"of {len(entry.decisions)} accepted", fraction=1.0,
                               round_number=event.round_number, values=metrics))

    def _fail(self, recorder: Recorder, entry: _Attempt, failure: Failure) -> None:
        if failure in entry.failures:
            return
        entry.failures.append(failure)
        recorder.record_failure(failure)
        self.progress(Progress(Stage.FAILED, f"{failure.hospital_id} failed at {failure.stage}: "
                               f"{failure.message}", round_number=failure.round_number,
                               hospital_id=failure.hospital_id))

    @staticmethod
    def _lap(entry: _Attempt, stage: str) -> None:
        now = time.perf_counter()
        entry.durations[stage] = entry.durations.get(stage, 0.0) + now - entry.mark
        entry.mark = now

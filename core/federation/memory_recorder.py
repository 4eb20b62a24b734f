"""A recorder that keeps rounds in memory: for benchmarks and tests of the engine alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from core.federation.interfaces import Recorder
from core.federation.policy import VerificationPolicy
from core.federation.types import Commitment, Decision, Failure, HospitalInfo, RoundOutcome, Vote
from core.models.weights import Weights


@dataclass
class RecordedRound:
    round_number: int
    global_hash: str
    status: str = "open"
    commitments: list[Commitment] = field(default_factory=list)
    votes: list[Vote] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    outcome: RoundOutcome | None = None
    abort_reason: str | None = None


class InMemoryRecorder(Recorder):
    name = "memory"

    def __init__(self) -> None:
        self.hospitals: list[HospitalInfo] = []
        self.rounds: dict[int, RecordedRound] = {}

    def register_hospitals(self, hospitals: Sequence[HospitalInfo]) -> None:
        self.hospitals = list(hospitals)

    def open_round(self, round_number: int, global_hash: str, global_weights: Weights,
                   policy: VerificationPolicy) -> None:
        self.rounds[round_number] = RecordedRound(round_number, global_hash)

    def record_commitment(self, commitment: Commitment) -> None:
        self.rounds[commitment.round_number].commitments.append(commitment)

    def record_votes(self, votes: Sequence[Vote]) -> None:
        for vote in votes:
            self.rounds[vote.round_number].votes.append(vote)

    def record_decisions(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            self.rounds[decision.round_number].decisions.append(decision)

    def record_failure(self, failure: Failure) -> None:
        self.rounds[failure.round_number].failures.append(failure)

    def finalize_round(self, outcome: RoundOutcome) -> None:
        recorded = self.rounds[outcome.round_number]
        recorded.status, recorded.outcome = "finalized", outcome

    def abort_round(self, round_number: int, reason: str) -> None:
        recorded = self.rounds[round_number]
        recorded.status, recorded.abort_reason = "aborted", reason

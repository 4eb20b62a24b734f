"""The federation's seams: how a candidate is scored, how updates are combined, where a round
is recorded locally, and what a hospital does with its own data.

The roles (`core.federation.roles`) see only these: the plaintext implementations live in
`core`, the SMPC ones in `smpc` (`SmpcOwner`, `SmpcDriver`); how the roles reach each
other is the `RoundChannel` of `core.federation.channel`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from core.federation.policy import VerificationPolicy
from core.federation.types import (
    Candidate,
    Commitment,
    Decision,
    Failure,
    HospitalInfo,
    RoundOutcome,
    ScoreMatrix,
    Scores,
    ValidatorInput,
    Vote,
)
from core.errors import CoreError
from core.models.weights import Weights
from core.progress import CancelToken, ProgressSink


class VerificationPending(CoreError):
    """A validator's scores are not ready yet (the SMPC driver is still scoring): the node tries
    again on a later step; nothing failed."""


class Verifier(ABC):
    """Scores every candidate for every validator; each validator learns only its own scores."""

    name: str = "verifier"
    # False only for the no-verification baseline: every candidate is then taken unvoted.
    verifies: bool = True
    # False when candidates stay secret-shared at the SMPC players: nodes then neither publish
    # their update blobs nor fetch anyone else's, and `score` gets candidates without deltas.
    sees_updates: bool = True

    def begin_round(self, round_number: int, global_weights: Weights, attempt: int = 0) -> None:
        """Called before any candidate of a round attempt is submitted; every hospital node of a
        simulation sharing this verifier calls it, so a repeat for the same attempt is a no-op."""

    @abstractmethod
    def commit(self, candidate: Candidate, validator: ValidatorInput | None = None) -> Commitment:
        """Takes the candidate into the verifier (secret-shares it, for SMPC, with the hospital's
        validation input when given) and returns what the hospital commits to on the ledger."""

    @abstractmethod
    def score(
        self,
        candidates: Sequence[Candidate],
        validators: Sequence[ValidatorInput],
        progress: ProgressSink,
        cancel: CancelToken,
    ) -> ScoreMatrix:
        """Returns scores for every (validator, candidate) pair."""

    def end_round(self) -> None:
        """Releases whatever the round held (shares, sessions)."""

    def close(self) -> None:
        """Releases long-lived resources (player connections)."""


class Aggregator(ABC):
    """Combines the accepted candidates into the next global model."""

    name: str = "aggregator"
    # False for secure aggregation: the accepted candidates come without deltas (they are held
    # as shares by the SMPC players) and the commitments say what to combine.
    needs_updates: bool = True

    @abstractmethod
    def aggregate(
        self,
        global_weights: Weights,
        accepted: Sequence[Candidate],
        commitments: Sequence[Commitment],
    ) -> Weights:
        """Returns the new global weights. `commitments` are those recorded for `accepted`,
        in the same order, so an implementation can check it combines what was verified."""


class SecureScoring(ABC):
    """The SMPC driver's work in a round: every candidate scored on every validator's shared
    split, the results left with the players for each validator to collect. Nothing returns."""

    @abstractmethod
    def score_round(self, round_number: int, attempt: int, global_weights: Weights,
                    candidates: Sequence[str], progress: ProgressSink, cancel: CancelToken) -> None: ...

    def close(self) -> None:
        """Releases player connections."""


class Recorder(ABC):
    """Where a round is written down: the SQLite state, the ledger, or both."""

    name: str = "recorder"

    @abstractmethod
    def register_hospitals(self, hospitals: Sequence[HospitalInfo]) -> None: ...

    @abstractmethod
    def open_round(
        self, round_number: int, global_hash: str, global_weights: Weights, policy: VerificationPolicy
    ) -> None: ...

    @abstractmethod
    def record_commitment(self, commitment: Commitment) -> None: ...

    @abstractmethod
    def record_votes(self, votes: Sequence[Vote]) -> None: ...

    @abstractmethod
    def record_decisions(self, decisions: Sequence[Decision]) -> None: ...

    @abstractmethod
    def record_failure(self, failure: Failure) -> None: ...

    @abstractmethod
    def finalize_round(self, outcome: RoundOutcome) -> None: ...

    @abstractmethod
    def abort_round(self, round_number: int, reason: str) -> None: ...

    def close(self) -> None:
        """Flushes and releases connections."""


class HospitalLink(ABC):
    """A hospital's own part: train on its data, bring its validation split, vote. The hospital
    node role drives it; `LocalHospital` is the one implementation (honest, or an attacker)."""

    @property
    @abstractmethod
    def info(self) -> HospitalInfo: ...

    @abstractmethod
    def train(
        self, round_number: int, global_weights: Weights, progress: ProgressSink, cancel: CancelToken
    ) -> Candidate:
        """Trains locally from the global weights and returns the candidate update."""

    @abstractmethod
    def validator_input(self, own: Candidate) -> ValidatorInput:
        """The hospital's validation split and its own update, for the verifier."""

    @abstractmethod
    def vote(self, round_number: int, scores: Mapping[str, Scores], policy: VerificationPolicy) -> tuple[str, ...]:
        """The candidates this hospital accepts, given the scores it learned of each (by id)."""

    @property
    def wants_peer_updates(self) -> bool:
        """True for an attack plugin that revises its update after seeing the others' (`revise`)."""
        return False

    def revise(self, own: Candidate, round_candidates: Sequence[Candidate]) -> Candidate:
        """The omniscient-adversary hook of robustness research: a colluding simulated attacker
        sees every update of the round before it finalises its own. Honest hospitals, and every
        real deployment, return `own` unchanged."""
        return own

"""The round's shared state as the roles see it: one interface, two implementations.

A role (hospital node, coordinator) never calls another role. It reads the round's events since
its stored cursor, reads the round's current state, and acts through a `RoundChannel` bound to
its own identity. `InMemoryChannel` (this package) keeps that state in a Python object for
simulations and tests; `ledger.channel.LedgerChannel` keeps it in the federation contract, with
model blobs in the members' model stores. Both enforce the same rules, in the same order:

    open_round  (coordinator)                -> COMMIT until `commit_deadline`
    commit      (each registered hospital)   once per round attempt, before the deadline
    close_commits (anyone, once the deadline passed or every registered hospital committed)
                -> VOTE until `vote_deadline`; no commitment at all -> ABORTED
    vote        (each registered hospital)   once, a set of accepted candidates + a scores hash
    decide      (anyone, once the deadline passed or every registered hospital voted)
                -> AGGREGATE; accepted iff accepts > registered / 2 (absent votes do not accept)
    finalize    (coordinator)                contributors = exactly the accepted -> FINAL
    abort       (coordinator at any time; anyone once `final_deadline` passed) -> ABORTED

An aborted round number can be opened again (a new `attempt`); the registry changes only while
no round is open. Every refused call raises `PhaseError` with the reason; a call whose effect is
already in place raises `AlreadyDone`, so a restarted role can simply try again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from core.errors import FederationError


class Phase(str, Enum):
    COMMIT = "commit"
    VOTE = "vote"
    AGGREGATE = "aggregate"
    FINAL = "final"
    ABORTED = "aborted"


COORDINATOR = "coordinator"  # the identity of the coordinator's channel
OBSERVER = "observer"  # a read-only identity: the archive, an SMPC player


class PhaseError(FederationError):
    """The channel refused a call: wrong phase, not a member, deadline not reached, ..."""

    def __init__(self, user_message: str, *, reason: str, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.reason = reason


class AlreadyDone(PhaseError):
    """The call's effect is already on record (committed, voted, closed, decided, finalised)."""


@dataclass(frozen=True)
class Member:
    """A registered hospital: its id, its ledger account (None in memory) and where its model
    store answers (the URL its peers fetch its blobs from; empty in memory)."""

    hospital_id: str
    account: str | None = None
    store_url: str = ""


@dataclass(frozen=True)
class Deadlines:
    """Block times (seconds since the epoch, as the channel's clock counts them)."""

    commit: float
    vote: float
    final: float


@dataclass(frozen=True)
class RoundTiming:
    """How long each phase may last, from the opening of a round."""

    commit_seconds: float = 600.0
    vote_seconds: float = 600.0
    aggregate_seconds: float = 600.0

    def deadlines(self, opened_at: float) -> Deadlines:
        commit = opened_at + self.commit_seconds
        vote = commit + self.vote_seconds
        return Deadlines(commit, vote, vote + self.aggregate_seconds)


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundEvent:
    round_number: int
    attempt: int  # the channel's id of this opening of the round number (unique across rounds)


@dataclass(frozen=True)
class RoundOpened(RoundEvent):
    previous_hash: str
    policy_digest: str
    registered: int
    deadlines: Deadlines
    verified: bool = True  # False only for the no-verification baseline of simulations


@dataclass(frozen=True)
class Committed(RoundEvent):
    hospital_id: str
    model_hash: str
    num_samples: int
    share_commitments: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommitsClosed(RoundEvent):
    candidates: tuple[str, ...]  # in commit order
    dropouts: tuple[str, ...]  # registered hospitals without a commitment


@dataclass(frozen=True)
class Voted(RoundEvent):
    validator_id: str
    accepted: tuple[str, ...]  # the candidates this validator accepts; every other one it rejects
    scores_hash: str  # salted hash of the validator's scores (kept by the validator)


@dataclass(frozen=True)
class CandidateDecision:
    candidate_id: str
    model_hash: str
    accepts: int
    rejects: int
    accepted: bool


@dataclass(frozen=True)
class Decided(RoundEvent):
    registered: int
    decisions: tuple[CandidateDecision, ...]
    abstained: tuple[str, ...] = ()  # registered hospitals that cast no vote
    unverified: bool = False


@dataclass(frozen=True)
class Finalized(RoundEvent):
    global_hash: str
    contributors: tuple[str, ...]


@dataclass(frozen=True)
class Aborted(RoundEvent):
    reason: str


@dataclass(frozen=True)
class MembershipChanged:
    """The registry changed (between rounds)."""

    members: tuple[Member, ...]


Event = RoundEvent | MembershipChanged


# -- state ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitmentView:
    hospital_id: str
    model_hash: str
    num_samples: int
    share_commitments: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoundView:
    """The latest attempt of a round as the channel holds it now."""

    round_number: int
    attempt: int
    phase: Phase
    previous_hash: str
    policy_digest: str
    registered: int
    deadlines: Deadlines
    verified: bool
    commitments: tuple[CommitmentView, ...] = ()  # in commit order
    candidates: tuple[str, ...] = ()  # fixed once commits are closed
    voters: tuple[str, ...] = ()
    accepted: tuple[str, ...] = ()  # once decided
    global_hash: str = ""  # once final
    contributors: tuple[str, ...] = ()

    def commitment_of(self, hospital_id: str) -> CommitmentView | None:
        return next((c for c in self.commitments if c.hospital_id == hospital_id), None)


@dataclass
class Cursor:
    """Where a role has read the channel's events up to (a block number, or an event index)."""

    position: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class RoundChannel(ABC):
    """One role's view of the federation's round state, acting as `identity`."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """The hospital id this channel acts as, or COORDINATOR."""

    # -- reading --

    @abstractmethod
    def events(self, since: int) -> tuple[list[Event], int]:
        """Every event after position `since`, in order, and the position to read from next.
        Reading twice from the same position gives the same events."""

    @abstractmethod
    def members(self) -> list[Member]:
        """The registered hospitals now."""

    @abstractmethod
    def current_round(self) -> RoundView | None:
        """The most recently opened round attempt, or None on a fresh channel."""

    @abstractmethod
    def round(self, round_number: int) -> RoundView | None:
        """The latest attempt of `round_number`, or None."""

    @abstractmethod
    def now(self) -> float:
        """The channel's clock: block time on a ledger."""

    @abstractmethod
    def wait_until(self, timestamp: float, *, poll: float = 0.5) -> None:
        """Returns once `now() >= timestamp` (a simulated clock jumps there)."""

    # -- acting (each call is refused with PhaseError, or AlreadyDone when already in effect) --

    @abstractmethod
    def open_round(self, round_number: int, previous_hash: str, policy_digest: str,
                   timing: RoundTiming, *, verified: bool = True) -> RoundView: ...

    @abstractmethod
    def commit(self, round_number: int, model_hash: str, num_samples: int,
               share_commitments: Sequence[str] = ()) -> None: ...

    @abstractmethod
    def close_commits(self, round_number: int) -> None: ...

    @abstractmethod
    def vote(self, round_number: int, accepted: Sequence[str], scores_hash: str) -> None: ...

    @abstractmethod
    def decide(self, round_number: int) -> None: ...

    @abstractmethod
    def finalize(self, round_number: int, global_hash: str, contributors: Sequence[str]) -> None: ...

    @abstractmethod
    def abort(self, round_number: int, reason: str) -> None: ...

    # -- model blobs --

    @abstractmethod
    def put_blob(self, data: bytes) -> str:
        """Publishes bytes in this role's model store; returns their hex SHA-256."""

    @abstractmethod
    def get_blob(self, digest: str, owner: str | None = None) -> bytes:
        """The bytes named `digest`, from this role's own store or else `owner`'s (a hospital id
        or COORDINATOR); refuses bytes that do not hash to `digest` (BlobMismatch-like CoreError)."""

    def close(self) -> None:
        """Releases connections."""

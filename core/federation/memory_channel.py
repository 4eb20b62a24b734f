"""`InMemoryChannel`: the round state machine of `core.federation.channel` in a Python object.

The simulations and the demo run every role in one process on it; the federation contract
(`ledger.channel.LedgerChannel`) enforces the same rules, and one contract suite of tests runs
over both. The clock is simulated: `wait_until` jumps it forward, so a deadline is reached at
once and a run is deterministic.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from core.errors import FederationError
from core.federation.channel import (
    COORDINATOR,
    Aborted,
    AlreadyDone,
    CandidateDecision,
    CommitmentView,
    Committed,
    CommitsClosed,
    Decided,
    Event,
    Finalized,
    Member,
    MembershipChanged,
    Phase,
    PhaseError,
    RoundChannel,
    RoundOpened,
    RoundTiming,
    RoundView,
    Voted,
)
from core.federation.types import majority_accepts


class BlobRefused(FederationError):
    """A model store has no such blob, or its bytes do not hash to the name asked for."""


@dataclass
class _Attempt:
    view: RoundView
    votes: dict[str, tuple[str, ...]] = field(default_factory=dict)


class InMemoryLedger:
    """The shared state every `InMemoryChannel` of one federation acts on."""

    def __init__(self, *, start_time: float = 1_700_000_000.0) -> None:
        self._lock = threading.RLock()
        self._clock = start_time
        self._members: dict[str, Member] = {}
        self._events: list[Event] = []
        self._attempts: dict[int, _Attempt] = {}
        self._latest: dict[int, int] = {}  # round number -> latest attempt
        self._open: int | None = None  # attempt id of the open round
        self._blobs: dict[str, dict[str, bytes]] = {}  # owner -> digest -> bytes

    # -- administration (the consortium admin's acts) --

    def register(self, hospital_id: str, *, account: str | None = None, store_url: str = "") -> None:
        with self._lock:
            if self._open is not None:
                raise PhaseError("The registry can change only between rounds.", reason="a round is open")
            if hospital_id in self._members:
                raise AlreadyDone(f"'{hospital_id}' is already registered.", reason="already registered")
            self._members[hospital_id] = Member(hospital_id, account, store_url)
            self._events.append(MembershipChanged(tuple(self._members.values())))

    def deregister(self, hospital_id: str) -> None:
        with self._lock:
            if self._open is not None:
                raise PhaseError("The registry can change only between rounds.", reason="a round is open")
            if self._members.pop(hospital_id, None) is None:
                raise PhaseError(f"'{hospital_id}' is not registered.", reason="not registered")
            self._events.append(MembershipChanged(tuple(self._members.values())))

    def channel(self, identity: str) -> InMemoryChannel:
        return InMemoryChannel(self, identity)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._clock += seconds

    # -- what the channels call --

    def _now(self) -> float:
        return self._clock

    def _view(self, attempt: int) -> RoundView:
        return self._attempts[attempt].view

    def _set(self, attempt: int, **changes: object) -> RoundView:
        entry = self._attempts[attempt]
        entry.view = replace(entry.view, **changes)  # type: ignore[arg-type]
        return entry.view

    def _open_attempt(self, round_number: int) -> _Attempt:
        if self._open is None or self._view(self._open).round_number != round_number:
            latest = self._latest.get(round_number)
            if latest is not None:
                phase = self._view(latest).phase
                if phase is Phase.FINAL:
                    raise AlreadyDone(f"Round {round_number} is already final.", reason="round is final")
            raise PhaseError(f"Round {round_number} is not open.", reason="round is not open")
        return self._attempts[self._open]

    def _require_member(self, identity: str) -> None:
        if identity not in self._members:
            raise PhaseError(f"'{identity}' is not a registered hospital.", reason="not a registered hospital")

    def _require_coordinator(self, identity: str) -> None:
        if identity != COORDINATOR:
            raise PhaseError("Only the coordinator may do this.", reason="only the coordinator")

    def open_round(self, identity: str, round_number: int, previous_hash: str, policy_digest: str,
                   timing: RoundTiming, verified: bool) -> RoundView:
        with self._lock:
            self._require_coordinator(identity)
            if self._open is not None:
                current = self._view(self._open)
                if current.round_number == round_number and current.previous_hash == previous_hash:
                    raise AlreadyDone(f"Round {round_number} is already open.", reason="round is already open")
                raise PhaseError("Another round is open.", reason="another round is open")
            latest = self._latest.get(round_number)
            if latest is not None and self._view(latest).phase is Phase.FINAL:
                raise AlreadyDone(f"Round {round_number} is already final.", reason="round is final")
            if not self._members:
                raise PhaseError("No hospital is registered.", reason="no hospitals registered")
            attempt = len(self._attempts) + 1
            deadlines = timing.deadlines(self._clock)
            view = RoundView(round_number, attempt, Phase.COMMIT, previous_hash, policy_digest,
                             len(self._members), deadlines, verified)
            self._attempts[attempt] = _Attempt(view)
            self._latest[round_number] = attempt
            self._open = attempt
            self._events.append(RoundOpened(round_number, attempt, previous_hash, policy_digest,
                                            len(self._members), deadlines, verified))
            return view

    def commit(self, identity: str, round_number: int, model_hash: str, num_samples: int,
               share_commitments: Sequence[str]) -> None:
        with self._lock:
            entry = self._open_attempt(round_number)
            self._require_member(identity)
            view = entry.view
            if view.commitment_of(identity) is not None:
                raise AlreadyDone(f"'{identity}' already committed in round {round_number}.",
                                  reason="already committed")
            if view.phase is not Phase.COMMIT:
                raise PhaseError(f"Commitments of round {round_number} are closed.", reason="commits closed")
            if self._clock >= view.deadlines.commit:
                raise PhaseError(f"The commitment deadline of round {round_number} has passed.",
                                 reason="commit deadline passed")
            if len(model_hash) != 64 or num_samples < 0:
                raise PhaseError("A commitment needs a SHA-256 model hash and a sample count.",
                                 reason="bad commitment")
            commitment = CommitmentView(identity, model_hash, int(num_samples), tuple(share_commitments))
            self._set(view.attempt, commitments=view.commitments + (commitment,))
            self._events.append(Committed(round_number, view.attempt, identity, model_hash, int(num_samples),
                                          tuple(share_commitments)))

    def close_commits(self, identity: str, round_number: int) -> None:
        with self._lock:
            entry = self._open_attempt(round_number)
            view = entry.view
            if view.phase is not Phase.COMMIT:
                raise AlreadyDone(f"Commitments of round {round_number} are already closed.",
                                  reason="commits already closed")
            committed = tuple(c.hospital_id for c in view.commitments)
            if self._clock < view.deadlines.commit and len(committed) < view.registered:
                raise PhaseError("Commitments stay open until their deadline or until every hospital "
                                 "committed.", reason="commit deadline not reached")
            dropouts = tuple(h for h in self._members if h not in committed)
            self._events.append(CommitsClosed(round_number, view.attempt, committed, dropouts))
            if not committed:
                self._abort(view, "no hospital committed an update")
                return
            self._set(view.attempt, phase=Phase.VOTE, candidates=committed)
            if not view.verified:
                self._decide(self._attempts[view.attempt], unverified=True)

    def vote(self, identity: str, round_number: int, accepted: Sequence[str], scores_hash: str) -> None:
        with self._lock:
            entry = self._open_attempt(round_number)
            self._require_member(identity)
            view = entry.view
            if identity in entry.votes:
                raise AlreadyDone(f"'{identity}' already voted in round {round_number}.", reason="already voted")
            if view.phase is not Phase.VOTE or not view.verified:
                raise PhaseError(f"Round {round_number} is not taking votes.", reason="voting closed")
            if self._clock >= view.deadlines.vote:
                raise PhaseError(f"The voting deadline of round {round_number} has passed.",
                                 reason="vote deadline passed")
            unknown = [c for c in accepted if c not in view.candidates]
            if unknown or len(set(accepted)) != len(accepted):
                raise PhaseError("A vote may accept only the round's candidates, each once.",
                                 reason="unknown candidate", detail=", ".join(unknown))
            ordered = tuple(c for c in view.candidates if c in set(accepted))
            entry.votes[identity] = ordered
            self._set(view.attempt, voters=view.voters + (identity,))
            self._events.append(Voted(round_number, view.attempt, identity, ordered, scores_hash))

    def decide(self, identity: str, round_number: int) -> None:
        with self._lock:
            entry = self._open_attempt(round_number)
            view = entry.view
            if view.phase is Phase.AGGREGATE:
                raise AlreadyDone(f"Round {round_number} is already decided.", reason="already decided")
            if view.phase is not Phase.VOTE:
                raise PhaseError(f"Round {round_number} is not in its voting phase.", reason="not voting")
            if self._clock < view.deadlines.vote and len(entry.votes) < view.registered:
                raise PhaseError("Voting stays open until its deadline or until every hospital voted.",
                                 reason="vote deadline not reached")
            self._decide(entry, unverified=False)

    def _decide(self, entry: _Attempt, *, unverified: bool) -> None:
        view = entry.view
        decisions = []
        for candidate in view.candidates:
            accepts = sum(1 for ballot in entry.votes.values() if candidate in ballot)
            rejects = len(entry.votes) - accepts
            accepted = unverified or majority_accepts(accepts, view.registered)
            model_hash = view.commitment_of(candidate).model_hash  # type: ignore[union-attr]
            decisions.append(CandidateDecision(candidate, model_hash, accepts, rejects, accepted))
        abstained = tuple(h for h in self._members if h not in entry.votes) if not unverified else ()
        self._set(view.attempt, phase=Phase.AGGREGATE,
                  accepted=tuple(d.candidate_id for d in decisions if d.accepted))
        self._events.append(Decided(view.round_number, view.attempt, view.registered, tuple(decisions),
                                    abstained, unverified))

    def finalize(self, identity: str, round_number: int, global_hash: str, contributors: Sequence[str]) -> None:
        with self._lock:
            self._require_coordinator(identity)
            entry = self._open_attempt(round_number)
            view = entry.view
            if view.phase is not Phase.AGGREGATE:
                raise PhaseError(f"Round {round_number} is not decided yet.", reason="round not decided")
            if len(global_hash) != 64:
                raise PhaseError("The global model needs a SHA-256 hash.", reason="empty global hash")
            if sorted(contributors) != sorted(view.accepted) or len(set(contributors)) != len(contributors):
                raise PhaseError("The contributors must be exactly the accepted candidates.",
                                 reason="contributors must equal the accepted models")
            self._set(view.attempt, phase=Phase.FINAL, global_hash=global_hash,
                      contributors=tuple(contributors))
            self._open = None
            self._events.append(Finalized(round_number, view.attempt, global_hash, tuple(contributors)))

    def abort(self, identity: str, round_number: int, reason: str) -> None:
        with self._lock:
            entry = self._open_attempt(round_number)
            if identity != COORDINATOR and self._clock < entry.view.deadlines.final:
                raise PhaseError("Only the coordinator may abort a round before its last deadline.",
                                 reason="only the coordinator before the deadline")
            self._abort(entry.view, reason)

    def _abort(self, view: RoundView, reason: str) -> None:
        self._set(view.attempt, phase=Phase.ABORTED)
        self._open = None
        self._events.append(Aborted(view.round_number, view.attempt, reason))

    def put_blob(self, owner: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._blobs.setdefault(owner, {})[digest] = bytes(data)
        return digest

    def get_blob(self, reader: str, digest: str, owner: str | None) -> bytes:
        with self._lock:
            for store in (reader, owner):
                if store is not None and digest in self._blobs.get(store, {}):
                    data = self._blobs[store][digest]
                    if hashlib.sha256(data).hexdigest() != digest:
                        raise BlobRefused("A model's bytes do not match the hash on record.",
                                          detail=digest)
                    return data
        raise BlobRefused(f"The model {digest[:12]}… is not in any reachable model store.",
                          detail=f"owner {owner}")

    def tamper_blob(self, owner: str, digest: str, data: bytes) -> None:
        """Test hook: replaces a stored blob's bytes without renaming it (a lying model store)."""
        with self._lock:
            self._blobs[owner][digest] = data


class InMemoryChannel(RoundChannel):
    def __init__(self, ledger: InMemoryLedger, identity: str) -> None:
        self._ledger = ledger
        self._identity = identity

    @property
    def identity(self) -> str:
        return self._identity

    def events(self, since: int) -> tuple[list[Event], int]:
        with self._ledger._lock:
            events = list(self._ledger._events[since:])
            return events, since + len(events)

    def members(self) -> list[Member]:
        with self._ledger._lock:
            return list(self._ledger._members.values())

    def current_round(self) -> RoundView | None:
        with self._ledger._lock:
            return self._ledger._view(len(self._ledger._attempts)) if self._ledger._attempts else None

    def round(self, round_number: int) -> RoundView | None:
        with self._ledger._lock:
            attempt = self._ledger._latest.get(round_number)
            return None if attempt is None else self._ledger._view(attempt)

    def now(self) -> float:
        return self._ledger._now()

    def wait_until(self, timestamp: float, *, poll: float = 0.5) -> None:
        with self._ledger._lock:
            if self._ledger._clock < timestamp:
                self._ledger._clock = timestamp

    def open_round(self, round_number: int, previous_hash: str, policy_digest: str,
                   timing: RoundTiming, *, verified: bool = True) -> RoundView:
        return self._ledger.open_round(self._identity, round_number, previous_hash, policy_digest, timing,
                                       verified)

    def commit(self, round_number: int, model_hash: str, num_samples: int,
               share_commitments: Sequence[str] = ()) -> None:
        self._ledger.commit(self._identity, round_number, model_hash, num_samples, share_commitments)

    def close_commits(self, round_number: int) -> None:
        self._ledger.close_commits(self._identity, round_number)

    def vote(self, round_number: int, accepted: Sequence[str], scores_hash: str) -> None:
        self._ledger.vote(self._identity, round_number, accepted, scores_hash)

    def decide(self, round_number: int) -> None:
        self._ledger.decide(self._identity, round_number)

    def finalize(self, round_number: int, global_hash: str, contributors: Sequence[str]) -> None:
        self._ledger.finalize(self._identity, round_number, global_hash, contributors)

    def abort(self, round_number: int, reason: str) -> None:
        self._ledger.abort(self._identity, round_number, reason)

    def put_blob(self, data: bytes) -> str:
        return self._ledger.put_blob(self._identity, data)

    def get_blob(self, digest: str, owner: str | None = None) -> bytes:
        return self._ledger.get_blob(self._identity, digest, owner)

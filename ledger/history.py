"""The ledger's history rebuilt from its events, and checked step by step while it is replayed.

`replay` reads every event of the federation contract (v2) in chain order into plain dataclasses
(what `ledger show` lists and the audit compares with a home's state) and, as it goes, checks
each step against the round's state machine as `core.federation.channel` states it: per round
attempt RoundOpened -> Committed* -> CommitsClosed -> (RoundAborted | Voted* -> Decided ->
(RoundFinalized | RoundAborted)), only registered hospitals committing and voting, once each; a
decision that follows from the Voted bitmaps (accepted iff 2 * accepts > registered, absent votes
not accepting); contributors exactly the accepted; round n starting from round n-1's global model.
Any violation is a `problem`, in the order it occurred. The contract enforces all of this; the
replay shows that what the chain holds is what the contract allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.federation.types import majority_accepts
from ledger.client import LedgerClient, LedgerEvent, RoundPhase, bitmap_indices

_OPEN = (RoundPhase.COMMIT, RoundPhase.VOTE, RoundPhase.AGGREGATE)


@dataclass
class CommitmentEntry:
    hospital_id: str
    account: str
    model_hash: str
    num_samples: int
    shares: list[str]
    block_number: int


@dataclass
class VoteEntry:
    """One validator's ballot as the chain holds it: the candidates it accepts and the salted
    hash of the scores behind them (the scores stay with the validator)."""

    validator_id: str
    account: str
    accepted: list[str]  # candidate ids, in commit order
    scores_hash: str
    block_number: int


@dataclass
class DecisionEntry:
    candidate_id: str
    model_hash: str
    accepts: int
    rejects: int
    accepted: bool


@dataclass
class RoundEntry:
    """One round attempt as the chain recorded it."""

    round_id: int  # the attempt: unique across rounds
    number: int
    phase: RoundPhase
    previous_hash: str
    policy_digest: str
    registered: int
    verified: bool
    deadlines: tuple[int, int, int]  # commit, vote, final (block timestamps)
    opened_block: int
    members: list[str] = field(default_factory=list)  # the registered hospital ids, by position
    commitments: list[CommitmentEntry] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)  # fixed once commits close, in commit order
    dropouts: list[str] = field(default_factory=list)
    votes: list[VoteEntry] = field(default_factory=list)
    decisions: list[DecisionEntry] = field(default_factory=list)
    abstainers: list[str] = field(default_factory=list)
    unverified: bool = False
    global_hash: str | None = None
    contributors: list[str] = field(default_factory=list)
    abort_reason: str | None = None
    closed_block: int | None = None

    @property
    def state(self) -> str:
        """The round's status in the local database's words: open, finalized or aborted."""
        if self.phase is RoundPhase.FINAL:
            return "finalized"
        return "aborted" if self.phase is RoundPhase.ABORTED else "open"

    @property
    def accepted(self) -> list[str]:
        return [d.candidate_id for d in self.decisions if d.accepted]

    def decision_for(self, hospital_id: str) -> DecisionEntry | None:
        return next((d for d in self.decisions if d.candidate_id == hospital_id), None)

    def commitment_of(self, hospital_id: str) -> CommitmentEntry | None:
        return next((c for c in self.commitments if c.hospital_id == hospital_id), None)

    def vote_of(self, validator_id: str) -> VoteEntry | None:
        return next((v for v in self.votes if v.validator_id == validator_id), None)

    @property
    def label(self) -> str:
        return f"round {self.number} (attempt {self.round_id})"


@dataclass
class LedgerHistory:
    """Everything the federation contract recorded, in order, plus the problems found replaying it."""

    contract: str
    chain_id: int
    endpoint: str
    head_block: int
    authorities: dict[str, str]  # account -> hospital id, as registered now
    rounds: list[RoundEntry]
    events: int
    names: dict[str, str] = field(default_factory=dict)  # every account ever registered -> hospital id
    problems: list[str] = field(default_factory=list)

    def finalized(self) -> list[RoundEntry]:
        return [r for r in self.rounds if r.phase is RoundPhase.FINAL]

    def attempt(self, round_id: int) -> RoundEntry | None:
        return next((r for r in self.rounds if r.round_id == round_id), None)

    def attempts_of(self, number: int) -> list[RoundEntry]:
        return [r for r in self.rounds if r.number == number]


class _Replay:
    """Applies events one by one, keeping the registry and the open round as the contract does."""

    def __init__(self) -> None:
        self.authorities: dict[str, str] = {}  # account -> hospital id, in position order
        self.names: dict[str, str] = {}
        self.coordinator: str | None = None
        self.rounds: dict[int, RoundEntry] = {}
        self.open_id: int | None = None
        self.final_global: dict[int, str] = {}  # round number -> its global model
        self.problems: list[str] = []

    def name(self, account: str) -> str:
        return self.names.get(account, account)

    def names_of(self, accounts: Sequence[str]) -> list[str]:
        return [self.name(a) for a in accounts]

    def problem(self, event: LedgerEvent, text: str) -> None:
        self.problems.append(f"block {event.block_number}, {event.name}: {text}")

    def apply(self, e: LedgerEvent) -> None:
        handler = getattr(self, f"on_{e.name}", None)
        if handler is not None:
            handler(e, e.args)

    # -- registry --

    def on_AuthorityAdded(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        if self.open_id is not None:
            self.problem(e, f"{a['hospitalId']} registered while round attempt {self.open_id} was open")
        if a["account"] in self.authorities:
            self.problem(e, f"{a['account']} registered twice")
        self.authorities[a["account"]] = a["hospitalId"]
        self.names[a["account"]] = a["hospitalId"]

    def on_AuthorityRemoved(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        if self.open_id is not None:
            self.problem(e, f"{a['hospitalId']} removed while round attempt {self.open_id} was open")
        if a["account"] not in self.authorities:
            self.problem(e, f"{a['account']} removed but was not registered")
            return
        # The contract moves the last authority into the removed one's position.
        accounts = list(self.authorities)
        position = accounts.index(a["account"])
        last = accounts.pop()
        if last != a["account"]:
            accounts[position] = last
        self.authorities = {acct: self.authorities[acct] for acct in accounts}

    def on_CoordinatorChanged(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        self.coordinator = a["coordinator"]

    # -- rounds --

    def on_RoundOpened(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        number, round_id = a["roundNumber"], a["roundId"]
        if self.open_id is not None:
            self.problem(e, f"round {number} (attempt {round_id}) opened while attempt {self.open_id} was open")
        if round_id in self.rounds:
            self.problem(e, f"attempt {round_id} opened twice")
        if number in self.final_global:
            self.problem(e, f"round {number} opened again after it was final")
        if a["registered"] != len(self.authorities):
            self.problem(e, f"round {number} counts {a['registered']} hospitals, the registry holds "
                            f"{len(self.authorities)}")
        if not a["commitDeadline"] <= a["voteDeadline"] <= a["finalDeadline"]:
            self.problem(e, f"round {number}: deadlines out of order")
        before = self.final_global.get(number - 1)
        if number > 1 and before != a["previousHash"]:
            self.problem(e, f"round {number} starts from {a['previousHash']}, not from round {number - 1}'s "
                            f"global model {before or '(round not final)'}")
        self.rounds[round_id] = RoundEntry(
            round_id=round_id, number=number, phase=RoundPhase.COMMIT, previous_hash=a["previousHash"],
            policy_digest=a["policyDigest"], registered=a["registered"], verified=bool(a["verified"]),
            deadlines=(a["commitDeadline"], a["voteDeadline"], a["finalDeadline"]), opened_block=e.block_number,
            members=list(self.authorities.values()),
        )
        self.open_id = round_id

    def _round(self, e: LedgerEvent, a: dict[str, Any], *phases: RoundPhase) -> RoundEntry | None:
        """The event's round attempt, if it is the open one and in one of `phases`."""
        round_id = a["roundId"]
        entry = self.rounds.get(round_id)
        if entry is None or round_id != self.open_id:
            self.problem(e, f"round {a['roundNumber']} (attempt {round_id}) is not open")
            return None
        if entry.number != a["roundNumber"]:
            self.problem(e, f"attempt {round_id} is round {entry.number}, not {a['roundNumber']}")
        if entry.phase not in phases:
            self.problem(e, f"{entry.label} is in phase {entry.phase.name.lower()}")
        return entry

    def on_Committed(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a, RoundPhase.COMMIT)
        if entry is None:
            return
        hospital = a["hospital"]
        if hospital not in self.authorities:
            self.problem(e, f"{hospital} committed without being a registered hospital")
        if any(c.account == hospital for c in entry.commitments):
            self.problem(e, f"{self.name(hospital)} committed twice in {entry.label}")
        entry.commitments.append(CommitmentEntry(self.name(hospital), hospital, a["modelHash"],
                                                 int(a["numSamples"]), list(a["shares"]), e.block_number))

    def on_CommitsClosed(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a, RoundPhase.COMMIT)
        if entry is None:
            return
        entry.candidates = self.names_of(a["candidates"])
        entry.dropouts = self.names_of(a["dropouts"])
        committed = [c.hospital_id for c in entry.commitments]
        if entry.candidates != committed:
            self.problem(e, f"{entry.label}: candidates {entry.candidates} are not the commitments {committed}")
        absent = [m for m in entry.members if m not in committed]
        if entry.dropouts != absent:
            self.problem(e, f"{entry.label}: dropouts {entry.dropouts} are not the registered hospitals "
                            f"without a commitment {absent}")
        # With no candidate the contract aborts in the same transaction; unverified rounds are
        # decided there too (a Decided event follows).
        entry.phase = RoundPhase.VOTE

    def on_Voted(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a, RoundPhase.VOTE)
        if entry is None:
            return
        validator = a["validator"]
        if not entry.verified:
            self.problem(e, f"{self.name(validator)} voted in the unverified {entry.label}")
        if validator not in self.authorities:
            self.problem(e, f"{validator} voted without being a registered hospital")
        if any(v.account == validator for v in entry.votes):
            self.problem(e, f"{self.name(validator)} voted twice in {entry.label}")
        bits = bitmap_indices(int(a["acceptedBitmap"]))
        if any(i >= len(entry.candidates) for i in bits):
            self.problem(e, f"{self.name(validator)} accepts a candidate {entry.label} does not have")
        accepted = [entry.candidates[i] for i in bits if i < len(entry.candidates)]
        entry.votes.append(VoteEntry(self.name(validator), validator, accepted, a["scoresHash"], e.block_number))

    def on_Decided(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a, RoundPhase.VOTE)
        if entry is None:
            return
        unverified = bool(a["unverified"])
        if unverified != (not entry.verified):
            self.problem(e, f"{entry.label} opened {'verified' if entry.verified else 'unverified'} but "
                            f"was decided {'unverified' if unverified else 'on votes'}")
        if a["registered"] != entry.registered:
            self.problem(e, f"{entry.label} decided on {a['registered']} hospitals, it opened with "
                            f"{entry.registered}")
        accepts, rejects, bitmap = list(a["accepts"]), list(a["rejects"]), int(a["acceptedBitmap"])
        if not len(accepts) == len(rejects) == len(entry.candidates):
            self.problem(e, f"{entry.label}: {len(accepts)} counts for {len(entry.candidates)} candidates")
        voted = [v.validator_id for v in entry.votes]
        abstainers = self.names_of(a["abstainers"])
        expected_abstainers = [] if unverified else [m for m in entry.members if m not in voted]
        if abstainers != expected_abstainers:
            self.problem(e, f"{entry.label}: abstainers {abstainers} are not the registered hospitals "
                            f"without a vote {expected_abstainers}")
        for i, candidate in enumerate(entry.candidates):
            yes = sum(1 for v in entry.votes if candidate in v.accepted)
            no = len(entry.votes) - yes
            got = (accepts[i], rejects[i]) if i < len(accepts) and i < len(rejects) else (None, None)
            taken = bool(bitmap >> i & 1)
            expected = True if unverified else majority_accepts(yes, entry.registered)
            if not unverified and got != (yes, no):
                self.problem(e, f"{candidate} in {entry.label}: decision counts {got[0]}/{got[1]} but the "
                                f"Voted bitmaps give {yes}/{no}")
            if taken != expected:
                rule = "unverified rounds take every candidate" if unverified else "the majority rule"
                self.problem(e, f"{candidate} in {entry.label}: {'accepted' if taken else 'rejected'} against "
                                f"{rule} ({yes} of {entry.registered} accept)")
            commitment = entry.commitment_of(candidate)
            entry.decisions.append(DecisionEntry(candidate, commitment.model_hash if commitment else "",
                                                 int(got[0] or 0), int(got[1] or 0), taken))
        if bitmap >> len(entry.candidates):
            self.problem(e, f"{entry.label}: a candidate beyond the {len(entry.candidates)} is accepted")
        entry.abstainers, entry.unverified = abstainers, unverified
        entry.phase = RoundPhase.AGGREGATE

    def on_RoundFinalized(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a, RoundPhase.AGGREGATE)
        if entry is None:
            return
        contributors = self.names_of(a["contributors"])
        if len(set(contributors)) != len(contributors) or set(contributors) != set(entry.accepted):
            self.problem(e, f"{entry.label}: contributors {sorted(contributors)} are not the accepted "
                            f"candidates {sorted(entry.accepted)}")
        if int(a["globalHash"], 16) == 0:
            self.problem(e, f"{entry.label} finalised without a global model")
        entry.phase, entry.global_hash, entry.contributors = RoundPhase.FINAL, a["globalHash"], contributors
        entry.closed_block = e.block_number
        self.final_global[entry.number] = a["globalHash"]
        self.open_id = None

    def on_RoundAborted(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a, *_OPEN)
        if entry is None:
            return
        entry.phase, entry.abort_reason, entry.closed_block = RoundPhase.ABORTED, a["reason"], e.block_number
        self.open_id = None


def replay_events(events: Sequence[LedgerEvent]) -> _Replay:
    """The replayed state after `events` (in chain order)."""
    state = _Replay()
    for event in events:
        state.apply(event)
    return state


def replay(client: LedgerClient) -> LedgerHistory:
    """Reads every event of the federation contract and rebuilds (and checks) its history."""
    head = int(client.w3.eth.block_number)
    events = client.events(0, head)
    state = replay_events(events)
    history = LedgerHistory(
        contract=client.address,
        chain_id=client.chain_id,
        endpoint=client.endpoint,
        head_block=head,
        authorities=dict(state.authorities),
        rounds=[state.rounds[k] for k in sorted(state.rounds)],
        events=len(events),
        names=dict(state.names),
        problems=list(state.problems),
    )
    # The contract's storage must tell the same story as its events.
    for entry in history.rounds:
        stored = client.round(entry.round_id)
        accepted = sum(1 << i for i, d in enumerate(entry.decisions) if d.accepted)
        stored_hash = stored.global_hash if stored.phase is RoundPhase.FINAL else None
        if (stored.phase, stored_hash, stored.number) != (entry.phase, entry.global_hash, entry.number) or (
            entry.decisions and stored.accepted != accepted
        ):
            history.problems.append(
                f"{entry.label}: the contract's storage says {stored.phase.name.lower()} {stored_hash} "
                f"(accepted bitmap {stored.accepted}), its events say {entry.phase.name.lower()} "
                f"{entry.global_hash} (accepted bitmap {accepted})"
            )
    return history

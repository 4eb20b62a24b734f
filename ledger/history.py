"""The ledger's history rebuilt from its events, and checked step by step while it is replayed.

`replay` reads every contract event in chain order into plain dataclasses (what `ledger show`
lists and the GUI draws) and, as it goes, checks each step against the rules the contract
enforces: a decision must follow from the votes recorded before it and the number of authorities
registered when its round opened; a finalised round's contributors must be exactly its accepted
models. Any violation is a `problem`, in the order it occurred.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.federation.types import majority_accepts
from ledger.client import SCALE, LedgerClient, LedgerEvent, RoundState


@dataclass
class CommitmentEntry:
    hospital_id: str
    account: str
    model_hash: str
    shares_digest: str
    shares: list[str]
    block_number: int


@dataclass
class VoteEntry:
    validator_id: str
    candidate_id: str
    accept: bool
    correct: int
    total: int
    cosine: float
    norm: float
    reference_accuracy: float
    reference_norm: float
    block_number: int


@dataclass
class DecisionEntry:
    candidate_id: str
    model_hash: str
    accepts: int
    rejects: int
    registered: int
    accepted: bool
    block_number: int


@dataclass
class FailureEntry:
    hospital_id: str
    stage: str
    message: str
    block_number: int


@dataclass
class RoundEntry:
    """One round attempt as the chain recorded it."""

    round_id: int
    number: int
    state: str
    previous_hash: str
    policy_digest: str
    registered: int
    opened_block: int
    commitments: list[CommitmentEntry] = field(default_factory=list)
    votes: list[VoteEntry] = field(default_factory=list)
    decisions: list[DecisionEntry] = field(default_factory=list)
    failures: list[FailureEntry] = field(default_factory=list)
    global_hash: str | None = None
    unverified: bool = False  # the no-verification baseline: candidates taken without votes
    contributors: list[str] = field(default_factory=list)
    abort_reason: str | None = None
    closed_block: int | None = None

    def decision_for(self, hospital_id: str) -> DecisionEntry | None:
        return next((d for d in self.decisions if d.candidate_id == hospital_id), None)


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
    problems: list[str] = field(default_factory=list)

    def finalized(self) -> list[RoundEntry]:
        return [r for r in self.rounds if r.state == RoundState.FINALIZED.name.lower()]


class _Replay:
    """Applies events one by one, keeping the registry and open round as the contract does."""

    def __init__(self) -> None:
        self.authorities: dict[str, str] = {}
        self.names: dict[str, str] = {}  # every account ever registered -> its hospital id
        self.rounds: dict[int, RoundEntry] = {}
        self.open_id: int | None = None
        self.decided: set[int] = set()
        self.problems: list[str] = []

    def name(self, account: str) -> str:
        return self.names.get(account, account)

    def problem(self, event: LedgerEvent, text: str) -> None:
        self.problems.append(f"block {event.block_number}, {event.name}: {text}")

    def apply(self, e: LedgerEvent) -> None:
        handler = getattr(self, f"on_{e.name}", None)
        if handler is not None:
            handler(e, e.args)

    def on_AuthorityAdded(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        if a["account"] in self.authorities:
            self.problem(e, f"{a['account']} registered twice")
        self.authorities[a["account"]] = a["hospitalId"]
        self.names[a["account"]] = a["hospitalId"]

    def on_AuthorityRemoved(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        if self.authorities.pop(a["account"], None) is None:
            self.problem(e, f"{a['account']} removed but was not registered")

    def on_RoundOpened(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        if self.open_id is not None:
            self.problem(e, f"round id {a['roundId']} opened while round id {self.open_id} was open")
        if a["registered"] != len(self.authorities):
            self.problem(
                e,
                f"round {a['roundNumber']} counts {a['registered']} authorities, "
                f"the registry holds {len(self.authorities)}",
            )
        self.rounds[a["roundId"]] = RoundEntry(
            round_id=a["roundId"],
            number=a["roundNumber"],
            state="open",
            previous_hash=a["previousHash"],
            policy_digest=a["policyDigest"],
            registered=a["registered"],
            opened_block=e.block_number,
        )
        self.open_id = a["roundId"]

    def _round(self, e: LedgerEvent, round_id: int) -> RoundEntry | None:
        entry = self.rounds.get(round_id)
        if entry is None or round_id != self.open_id:
            self.problem(e, f"round id {round_id} is not open")
            return None
        return entry

    def on_Committed(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a["roundId"])
        if entry is None:
            return
        hospital = a["hospital"]
        if hospital not in self.authorities:
            self.problem(e, f"{hospital} committed without being an authority")
        if any(c.account == hospital for c in entry.commitments):
            self.problem(e, f"{self.name(hospital)} committed twice in round {entry.number}")
        entry.commitments.append(
            CommitmentEntry(
                hospital_id=self.name(hospital),
                account=hospital,
                model_hash=a["modelHash"],
                shares_digest=a["sharesDigest"],
                shares=list(a["shares"]),
                block_number=e.block_number,
            )
        )

    def on_Voted(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a["roundId"])
        if entry is None:
            return
        validator, candidate = a["validator"], a["candidate"]
        if validator not in self.authorities:
            self.problem(e, f"{validator} voted without being an authority")
        if a["roundId"] in self.decided:
            self.problem(e, f"{self.name(validator)} voted after round {entry.number} was decided")
        if not any(c.account == candidate for c in entry.commitments):
            self.problem(e, f"vote on {candidate}, which did not commit in round {entry.number}")
        if any(
            v.validator_id == self.name(validator) and v.candidate_id == self.name(candidate)
            for v in entry.votes
        ):
            self.problem(e, f"{self.name(validator)} voted twice on {self.name(candidate)}")
        entry.votes.append(
            VoteEntry(
                validator_id=self.name(validator),
                candidate_id=self.name(candidate),
                accept=a["accept"],
                correct=a["correct"],
                total=a["total"],
                cosine=a["cosine"] / SCALE,
                norm=a["norm"] / SCALE,
                reference_accuracy=a["referenceAccuracy"] / SCALE,
                reference_norm=a["referenceNorm"] / SCALE,
                block_number=e.block_number,
            )
        )

    def on_Decided(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a["roundId"])
        if entry is None:
            return
        self.decided.add(a["roundId"])
        candidate = self.name(a["candidate"])
        votes = [v for v in entry.votes if v.candidate_id == candidate]
        accepts = sum(v.accept for v in votes)
        rejects = len(votes) - accepts
        if (a["accepts"], a["rejects"]) != (accepts, rejects):
            self.problem(
                e,
                f"{candidate} in round {entry.number}: decision counts {a['accepts']}/"
                f"{a['rejects']} but the recorded votes are {accepts}/{rejects}",
            )
        if a["registered"] != entry.registered:
            self.problem(
                e,
                f"{candidate} in round {entry.number}: decided on {a['registered']} authorities, "
                f"the round opened with {entry.registered}",
            )
        expected = True if entry.unverified else majority_accepts(accepts, entry.registered)
        if a["accepted"] != expected:
            rule = "unverified rounds take every candidate" if entry.unverified else "the majority rule"
            self.problem(
                e,
                f"{candidate} in round {entry.number}: "
                f"{'accepted' if a['accepted'] else 'rejected'} against {rule} "
                f"({accepts} of {entry.registered} accept)",
            )
        commitment = next((c for c in entry.commitments if c.account == a["candidate"]), None)
        if commitment is None or commitment.model_hash != a["modelHash"]:
            self.problem(e, f"{candidate} in round {entry.number}: decided model is not the committed one")
        entry.decisions.append(
            DecisionEntry(
                candidate_id=candidate,
                model_hash=a["modelHash"],
                accepts=a["accepts"],
                rejects=a["rejects"],
                registered=a["registered"],
                accepted=a["accepted"],
                block_number=e.block_number,
            )
        )

    def on_VerificationSkipped(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a["roundId"])
        if entry is None:
            return
        entry.unverified = True
        if entry.votes:
            self.problem(e, f"round {entry.number} declared unverified after votes were cast")
        if entry.decisions:
            self.problem(e, f"round {entry.number} declared unverified after it was decided")

    def on_FailureRecorded(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a["roundId"])
        if entry is not None:
            entry.failures.append(FailureEntry(a["hospitalId"], a["stage"], a["message"], e.block_number))

    def on_RoundFinalized(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a["roundId"])
        if entry is None:
            return
        contributors = [self.name(c) for c in a["contributors"]]
        accepted = [d.candidate_id for d in entry.decisions if d.accepted]
        if len(entry.decisions) != len(entry.commitments):
            self.problem(e, f"round {entry.number} finalised with undecided candidates")
        if sorted(contributors) != sorted(accepted):
            self.problem(
                e,
                f"round {entry.number}: contributors {sorted(contributors)} are not the "
                f"accepted models {sorted(accepted)}",
            )
        entry.state, entry.global_hash, entry.contributors = "finalized", a["globalHash"], contributors
        entry.closed_block = e.block_number
        self.open_id = None

    def on_RoundAborted(self, e: LedgerEvent, a: dict[str, Any]) -> None:  # noqa: N802
        entry = self._round(e, a["roundId"])
        if entry is None:
            return
        entry.state, entry.abort_reason, entry.closed_block = "aborted", a["reason"], e.block_number
        self.open_id = None


def replay(client: LedgerClient) -> LedgerHistory:
    """Reads every event of the federation contract and rebuilds (and checks) its history."""
    head = int(client.w3.eth.block_number)
    events = client.events(0, head)
    state = _Replay()
    for event in events:
        state.apply(event)
    history = LedgerHistory(
        contract=client.address,
        chain_id=client.chain_id,
        endpoint=client.endpoint,
        head_block=head,
        authorities=dict(state.authorities),
        rounds=[state.rounds[k] for k in sorted(state.rounds)],
        events=len(events),
        problems=list(state.problems),
    )
    # The contract's storage must tell the same story as its events.
    for entry in history.rounds:
        stored = client.round(entry.round_id)
        stored_hash = stored.global_hash if stored.state == RoundState.FINALIZED else None
        if (stored.state.name.lower(), stored_hash) != (entry.state, entry.global_hash):
            history.problems.append(
                f"round {entry.number} (id {entry.round_id}): contract storage says "
                f"{stored.state.name.lower()} {stored_hash}, events say {entry.state} {entry.global_hash}"
            )
    return history

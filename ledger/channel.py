"""`LedgerChannel`: one role's view of the federation contract, as a `core.federation.channel.RoundChannel`.

The contract is the round's state machine; this class signs the role's calls with its own
account, turns the contract's refusals into `PhaseError` / `AlreadyDone` by their reason (so a
restarted role simply tries again), and follows the chain as web3.py's docs advise: `eth_getLogs`
over bounded block ranges from the caller's cursor, a block number. Hospital ids and accounts
are mapped through the contract's registry; model blobs live in each member's own store and are
fetched from the owner's registered store URL, hash-checked (in a secure consortium over mutual
TLS, each store's server certificate checked against the one pinned for its owner).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from core.federation.channel import (
    COORDINATOR,
    Aborted,
    AlreadyDone,
    CandidateDecision,
    CommitmentView,
    Committed,
    CommitsClosed,
    Deadlines,
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
from core.federation.memory_channel import BlobRefused
from core.errors import BlobMismatch, BlobNotFound
from core.state.blobs import BlobStore
from ledger.blobs import StoreTls, fetch_blob
from ledger.client import LedgerClient, LedgerEvent, RoundPhase, bitmap_indices
from ledger.clock import BlockClock
from ledger.errors import LedgerError, TransactionReverted, UnknownAccount

logger = logging.getLogger(__name__)

LOG_CHUNK = 2_000  # blocks per eth_getLogs request: within what public nodes accept

_PHASES = {
    RoundPhase.COMMIT: Phase.COMMIT,
    RoundPhase.VOTE: Phase.VOTE,
    RoundPhase.AGGREGATE: Phase.AGGREGATE,
    RoundPhase.FINAL: Phase.FINAL,
    RoundPhase.ABORTED: Phase.ABORTED,
}


def refusal(exc: TransactionReverted) -> PhaseError:
    """The channel error for a contract revert: `AlreadyDone` when the reason says the effect is
    in place (the contract's reasons say "already ..." then, or "round is final"), else `PhaseError`."""
    done = "already" in exc.reason.split() or exc.reason == "round is final"
    kind = AlreadyDone if done else PhaseError
    return kind(f"The ledger refused '{exc.function}': {exc.reason}.", reason=exc.reason, detail=exc.detail)


def _topic(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


class LedgerChannel(RoundChannel):
    """The federation contract seen and driven by `identity` (a hospital id or COORDINATOR).

    `account` must be the one the registry holds for that identity; `None` makes a read-only
    observer (an auditor, a dashboard). A hospital id not registered yet is allowed: the
    contract refuses its calls until the admin registers it.
    """

    def __init__(
        self,
        client: LedgerClient,
        identity: str,
        account: LocalAccount | None,
        blobs: BlobStore,
        *,
        clock: BlockClock,
        log_chunk: int = LOG_CHUNK,
        fetch_timeout: float = 30.0,
        store_tls: StoreTls | None = None,
    ) -> None:
        self._client = client
        self._identity = identity
        self._account = account
        self._blobs = blobs
        self._clock = clock
        self._log_chunk = log_chunk
        self._fetch_timeout = fetch_timeout
        self._store_tls = store_tls  # None: a plain consortium, stores over HTTP
        self._ids: dict[str, str] = {}  # account -> hospital id (ids of an account never change)
        self._candidates: dict[int, tuple[str, ...]] = {}  # round id -> candidate accounts, once closed
        self._model_hashes: dict[int, dict[str, str]] = {}  # round id -> account -> model hash
        if account is not None:
            self._check_account(account)

    def _check_account(self, account: LocalAccount) -> None:
        if self._identity == COORDINATOR:
            named = self._client.coordinator().account
            if named != account.address:
                raise UnknownAccount(
                    "This account is not the federation's coordinator on the ledger; use the "
                    "coordinator's keystore, or ask the consortium admin to name this account.",
                    detail=f"account {account.address}, coordinator {named or 'none'}",
                )
            return
        registered = self._client.account_of_hospital(self._identity)
        held = next((m for m in self._client.members() if m.account == account.address), None)
        if (registered is not None and registered != account.address) or (
            held is not None and held.hospital_id != self._identity
        ):
            raise UnknownAccount(
                f"This account is not the one the ledger registers for hospital '{self._identity}'; "
                "use that hospital's own keystore.",
                hospital_id=self._identity,
                detail=f"account {account.address}, registered {registered or 'none'}"
                + (f", registered as '{held.hospital_id}'" if held is not None else ""),
            )

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def client(self) -> LedgerClient:
        return self._client

    # -- reading --

    def members(self) -> list[Member]:
        return [Member(m.hospital_id, m.account, m.store_url) for m in self._client.members()]

    def now(self) -> float:
        return self._clock.now()

    def wait_until(self, timestamp: float, *, poll: float = 0.5) -> None:
        self._clock.wait_until(timestamp, poll=poll)

    def current_round(self) -> RoundView | None:
        count = self._client.round_count()
        return None if count == 0 else self._view(count)

    def round(self, round_number: int) -> RoundView | None:
        round_id = self._client.latest_round_id(round_number)
        return None if round_id == 0 else self._view(round_id)

    def events(self, since: int) -> tuple[list[Event], int]:
        latest = int(self._client.w3.eth.block_number)
        if latest <= since:
            return [], since
        out: list[Event] = []
        for raw in self._logs(since + 1, latest):
            event = self._decode(raw)
            if event is not None:
                out.append(event)
        return out, latest

    def _logs(self, first: int, last: int, topics: list[Any] | None = None) -> list[LedgerEvent]:
        """The contract's events in blocks first..last, read in chunks of `log_chunk` blocks."""
        out: list[LedgerEvent] = []
        start = first
        while start <= last:
            end = min(last, start + self._log_chunk - 1)
            out.extend(self._client.events(start, end, topics=topics))
            start = end + 1
        return out

    def _round_logs(self, round_id: int, opened_block: int, *, last: int | None = None) -> list[LedgerEvent]:
        stop = int(self._client.w3.eth.block_number) if last is None else last
        return self._logs(opened_block, stop, topics=[None, None, _topic(round_id)])

    def _id_of(self, account: str) -> str:
        hospital_id = self._ids.get(account)
        if hospital_id is None:
            # One read of the registry names every member; only a removed account needs its own.
            self._ids.update((m.account, m.hospital_id) for m in self._client.members())
            hospital_id = self._ids.get(account) or self._client.hospital_id_of(account) or account
            self._ids[account] = hospital_id
        return hospital_id

    def _ids_of(self, accounts: Sequence[str]) -> tuple[str, ...]:
        return tuple(self._id_of(a) for a in accounts)

    def _account_of(self, hospital_id: str) -> str | None:
        return self._client.account_of_hospital(hospital_id)

    def _round_candidates(self, round_id: int, block: int) -> tuple[str, ...]:
        """The candidate accounts of a round, from its CommitsClosed event (immutable once emitted)."""
        cached = self._candidates.get(round_id)
        if cached is None:
            record = self._client.round(round_id)
            closed = [e for e in self._round_logs(round_id, record.opened_block, last=block)
                      if e.name == "CommitsClosed"]
            cached = tuple(closed[0].args["candidates"]) if closed else ()
            if closed:
                self._candidates[round_id] = cached
        return cached

    def _round_hashes(self, round_id: int, candidates: Sequence[str], block: int) -> dict[str, str]:
        """The model hash of each candidate of a round: from the Committed events already read,
        else from the round's logs (a cursor that starts mid-round has not seen them)."""
        hashes = self._model_hashes.get(round_id, {})
        if any(c not in hashes for c in candidates):
            record = self._client.round(round_id)
            hashes = {e.args["hospital"]: e.args["modelHash"]
                      for e in self._round_logs(round_id, record.opened_block, last=block)
                      if e.name == "Committed"}
            self._model_hashes[round_id] = hashes
        return hashes

    def _decode(self, raw: LedgerEvent) -> Event | None:
        a = raw.args
        name = raw.name
        if name in ("AuthorityAdded", "AuthorityRemoved"):
            # The registry as it stood after that block: a role replaying history sees each change.
            members = self._client.members(block=raw.block_number)
            return MembershipChanged(tuple(Member(m.hospital_id, m.account, m.store_url) for m in members))
        if name == "CoordinatorChanged":
            return None  # not part of the round state the roles follow
        number, round_id = int(a["roundNumber"]), int(a["roundId"])
        if name == "RoundOpened":
            return RoundOpened(number, round_id, a["previousHash"], a["policyDigest"], int(a["registered"]),
                               Deadlines(float(a["commitDeadline"]), float(a["voteDeadline"]),
                                         float(a["finalDeadline"])), bool(a["verified"]))
        if name == "Committed":
            self._model_hashes.setdefault(round_id, {})[a["hospital"]] = a["modelHash"]
            return Committed(number, round_id, self._id_of(a["hospital"]), a["modelHash"], int(a["numSamples"]),
                             tuple(a["shares"]))
        if name == "CommitsClosed":
            self._candidates[round_id] = tuple(a["candidates"])
            return CommitsClosed(number, round_id, self._ids_of(a["candidates"]), self._ids_of(a["dropouts"]))
        if name == "Voted":
            candidates = self._round_candidates(round_id, raw.block_number)
            accepted = tuple(candidates[i] for i in bitmap_indices(int(a["acceptedBitmap"])))
            return Voted(number, round_id, self._id_of(a["validator"]), self._ids_of(accepted), a["scoresHash"])
        if name == "Decided":
            candidates = self._round_candidates(round_id, raw.block_number)
            hashes = self._round_hashes(round_id, candidates, raw.block_number)
            bitmap = int(a["acceptedBitmap"])
            decisions = tuple(
                CandidateDecision(self._id_of(c), hashes.get(c, ""), int(yes), int(no), bool(bitmap >> i & 1))
                for i, (c, yes, no) in enumerate(zip(candidates, a["accepts"], a["rejects"], strict=True))
            )
            return Decided(number, round_id, int(a["registered"]), decisions, self._ids_of(a["abstainers"]),
                           bool(a["unverified"]))
        if name == "RoundFinalized":
            return Finalized(number, round_id, a["globalHash"], self._ids_of(a["contributors"]))
        if name == "RoundAborted":
            return Aborted(number, round_id, str(a["reason"]))
        logger.warning("unknown ledger event %s in block %s", name, raw.block_number)
        return None

    def _view(self, round_id: int) -> RoundView:
        record = self._client.round(round_id)
        commitments: list[CommitmentView] = []
        candidates: tuple[str, ...] = ()
        voters: list[str] = []
        contributors: tuple[str, ...] = ()
        for e in self._round_logs(round_id, record.opened_block):
            a = e.args
            if e.name == "Committed":
                commitments.append(CommitmentView(self._id_of(a["hospital"]), a["modelHash"], int(a["numSamples"]),
                                                  tuple(a["shares"])))
            elif e.name == "CommitsClosed":
                candidates = self._ids_of(a["candidates"])
            elif e.name == "Voted":
                voters.append(self._id_of(a["validator"]))
            elif e.name == "RoundFinalized":
                contributors = self._ids_of(a["contributors"])
        return RoundView(
            round_number=record.number,
            attempt=round_id,
            phase=_PHASES[record.phase],
            previous_hash=record.previous_hash,
            policy_digest=record.policy_digest,
            registered=record.registered,
            deadlines=Deadlines(float(record.commit_deadline), float(record.vote_deadline),
                                float(record.final_deadline)),
            verified=record.verified,
            commitments=tuple(commitments),
            candidates=candidates,
            voters=tuple(voters),
            accepted=tuple(candidates[i] for i in bitmap_indices(record.accepted) if i < len(candidates)),
            global_hash=record.global_hash if record.phase is RoundPhase.FINAL else "",
            contributors=contributors,
        )

    # -- acting --

    def _act(self, send: Callable[[LocalAccount], TxReceipt]) -> TxReceipt:
        if self._account is None:
            raise PhaseError("This ledger channel only reads: it has no account to sign with.",
                             reason="read-only observer")
        try:
            return send(self._account)
        except TransactionReverted as exc:
            raise refusal(exc) from exc

    def open_round(self, round_number: int, previous_hash: str, policy_digest: str,
                   timing: RoundTiming, *, verified: bool = True) -> RoundView:
        _require_digest(previous_hash, "previous global-model hash")
        _require_digest(policy_digest, "policy digest")
        # The opening block comes after the latest one, so deadlines counted from it are never early.
        deadlines = timing.deadlines(self.now())
        self._act(lambda acct: self._client.open_round(
            acct, round_number, previous_hash, policy_digest, _ceil(deadlines.commit), _ceil(deadlines.vote),
            _ceil(deadlines.final), verified=verified))
        view = self.round(round_number)
        if view is None:
            raise LedgerError("The ledger confirmed a round's opening but does not show the round.",
                              detail=f"round {round_number}")
        return view

    def commit(self, round_number: int, model_hash: str, num_samples: int,
               share_commitments: Sequence[str] = ()) -> None:
        if not _is_digest(model_hash) or num_samples < 0 or not all(_is_digest(s) for s in share_commitments):
            raise PhaseError("A commitment needs a SHA-256 model hash, a sample count and SHA-256 share "
                             "commitments.", reason="bad commitment")
        self._act(lambda acct: self._client.commit(acct, round_number, model_hash, int(num_samples),
                                                   list(share_commitments)))

    def close_commits(self, round_number: int) -> None:
        self._act(lambda acct: self._client.close_commits(acct, round_number))

    def vote(self, round_number: int, accepted: Sequence[str], scores_hash: str) -> None:
        _require_digest(scores_hash, "scores hash")
        round_id = self._client.latest_round_id(round_number)
        # Votes go to the open round, whose registry is frozen: the contract's positions hold.
        candidates = self._ids_of(self._client.candidates(round_id)) if round_id else ()
        unknown = [c for c in accepted if c not in candidates]
        if unknown or len(set(accepted)) != len(accepted):
            # A name that is no candidate has no bit to set: refused here, as the contract would.
            raise PhaseError("A vote may accept only the round's candidates, each once.",
                             reason="unknown candidate", detail=", ".join(unknown))
        bitmap = sum(1 << candidates.index(c) for c in accepted)
        self._act(lambda acct: self._client.vote(acct, round_number, bitmap, scores_hash))

    def decide(self, round_number: int) -> None:
        self._act(lambda acct: self._client.decide(acct, round_number))

    def finalize(self, round_number: int, global_hash: str, contributors: Sequence[str]) -> None:
        _require_digest(global_hash, "global-model hash")
        accounts = [self._account_of(c) for c in contributors]
        if any(a is None for a in accounts):
            raise PhaseError("The contributors must be exactly the accepted candidates.",
                             reason="contributors must equal the accepted models",
                             detail=", ".join(c for c, a in zip(contributors, accounts, strict=True) if a is None))
        self._act(lambda acct: self._client.finalize_round(acct, round_number, global_hash,
                                                           [a for a in accounts if a is not None]))

    def abort(self, round_number: int, reason: str) -> None:
        self._act(lambda acct: self._client.abort_round(acct, round_number, reason))

    # -- model blobs --

    def put_blob(self, data: bytes) -> str:
        return self._blobs.put(data)

    def get_blob(self, digest: str, owner: str | None = None) -> bytes:
        """From the own store, else the owner's, else any other member's: a blob is named by its
        hash, so whoever serves it, only the right bytes are kept (a coordinator that went away
        after finalising does not keep its global model from a hospital that fetches it late)."""
        first_error: Exception | None = None
        if self._blobs.has(digest):
            try:
                return self._blobs.get(digest)
            except BlobMismatch as exc:  # a damaged local copy: fetch it again below
                logger.warning("local copy of %s is damaged; fetching it again", digest[:12])
                first_error: Exception = exc
        reasons: list[str] = []
        for url, who in self._stores(owner):
            try:
                return fetch_blob(url, digest, self._blobs, timeout=self._fetch_timeout, tls=self._store_tls,
                                  owner=who)
            except (BlobMismatch, BlobNotFound, LedgerError) as exc:
                reasons.append(f"{who}: {exc.user_message}")
                first_error = exc
        if not reasons:
            raise BlobRefused(f"The model {digest[:12]}… is not in this role's model store and no member "
                              "serves a model store.", detail=digest)
        raise BlobRefused(f"The model {digest[:12]}… could not be fetched from {owner or 'any member'}'s "
                          f"model store: {reasons[0].split(': ', 1)[1]}", detail="; ".join(reasons)) from first_error

    def _stores(self, owner: str | None) -> list[tuple[str, str]]:
        """(store URL, whose) to try: the owner first, then every other member and the coordinator."""
        coordinator = self._client.coordinator().store_url
        stores = [(m.store_url, m.hospital_id) for m in self._client.members()
                  if m.hospital_id != self._identity]
        if self._identity != COORDINATOR:
            stores.append((coordinator, COORDINATOR))
        stores = [(url, who) for url, who in stores if url]
        stores.sort(key=lambda item: item[1] != owner)
        return stores

    def close(self) -> None:
        """The client's connection belongs to the session that made it; nothing to release here."""


def _is_digest(text: str) -> bool:
    body = text[2:] if text.startswith(("0x", "0X")) else text
    return len(body) == 64 and all(c in "0123456789abcdefABCDEF" for c in body)


def _require_digest(text: str, what: str) -> None:
    if not _is_digest(text):
        raise PhaseError(f"The {what} is not a hex SHA-256 digest.", reason=f"bad {what}", detail=repr(text))


def _ceil(timestamp: float) -> int:
    return int(-(-timestamp // 1))

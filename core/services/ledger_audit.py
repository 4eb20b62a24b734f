"""The "audit ledger" and "show ledger" use cases: the chain checked against itself, against the
model blobs, the SQLite state and the ballots of this data directory.

`audit_ledger` is what `python main.py ledger audit` runs (exit 0 only when `ok`); `show_ledger`
what `ledger show` lists. Both open the ledger read-only (no keystore password, and they can run
beside the app or a node): in a simulation's home the chain the home records (embedded, or the
node given with `rpc_url`); in a deployment site's home the contract its consortium file names,
on the consortium's node, after the file's signature and the chain are checked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.federation.consortium import Consortium, load_consortium
from core.federation.policy import VerificationPolicy, recorded_policy
from core.federation.roles.ballots import Ballot, scores_hash
from core.settings import Settings
from core.state.blobs import BlobStore
from core.state.db import Database, open_database
from core.state.queries import FederationView, RoundView, list_federations, list_rounds
from core.state.role_state import SqliteRoleState, role_names
from ledger.audit import AuditReport, audit_history, check_blob
from ledger.consortium import recover_signer, verify_on_chain
from ledger.errors import ChainFileMissing
from ledger.explorer import BlockView, EventView, list_blocks, list_events, verify_model_hash
from ledger.history import LedgerHistory, RoundEntry, replay
from ledger.session import LedgerSession, LedgerSettings, open_ledger

logger = logging.getLogger(__name__)

NODE_ROLE = "node"  # the role_states row of a hospital node: its ballots


@dataclass(frozen=True)
class LedgerAuditResult:
    """The whole audit: `ok` only when the chain, the blobs, the local database and the ballots
    all agree."""

    ok: bool
    discrepancies: list[str]
    chain: AuditReport
    rounds_compared: int
    ballots_checked: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def first_discrepancy(self) -> str | None:
        return self.discrepancies[0] if self.discrepancies else None


# -- opening the ledger ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ledger:
    session: LedgerSession
    consortium: Consortium | None
    rpc_url: str | None  # the node read (None: the embedded chain)


@contextmanager
def _reader(settings: Settings, rpc_url: str | None, consortium: Path | None) -> Iterator[_Ledger]:
    """A read-only ledger session for one query: the home's own chain, or the consortium's."""
    url = rpc_url or settings.rpc_url
    address = None
    kit = None
    if consortium is not None:
        kit = load_consortium(consortium, recover_signer)
        if not url:
            raise ConfigError("A consortium's ledger is read on its node: pass --rpc URL or set the ledger "
                              "node URL in the settings.")
        address = kit.contract.address
    session = open_ledger(LedgerSettings(home=settings.home, rpc_url=url, contract_address=address,
                                         keystore_path=settings.keystore_dir, blob_path=settings.blob_dir),
                          read_only=True)
    try:
        if kit is not None:
            verify_on_chain(kit, session.client)
        yield _Ledger(session, kit, url)
    finally:
        session.close()


def show_ledger(settings: Settings, *, rpc_url: str | None = None, consortium: Path | None = None) -> LedgerHistory:
    """Every round attempt on the ledger with its commitments, votes and decisions."""
    with _reader(settings, rpc_url, consortium) as ledger:
        return replay(ledger.session.client)


def recent_blocks(settings: Settings, *, limit: int = 20, before: int | None = None, rpc_url: str | None = None,
                  consortium: Path | None = None) -> list[BlockView]:
    """The explorer's block list: newest first, each transaction decoded to its contract call."""
    with _reader(settings, rpc_url, consortium) as ledger:
        return list_blocks(ledger.session.client, limit=limit, before=before)


def recent_events(settings: Settings, *, limit: int = 100, name: str | None = None, rpc_url: str | None = None,
                  consortium: Path | None = None) -> list[EventView]:
    """The explorer's event list: newest first, in words, optionally of one kind."""
    with _reader(settings, rpc_url, consortium) as ledger:
        return list_events(ledger.session.client, limit=limit, name=name)


def is_model_on_ledger(settings: Settings, model_hash: str, *, rpc_url: str | None = None,
                       consortium: Path | None = None) -> bool:
    """Whether a model hash is a finalised global model or a committed candidate on the ledger."""
    with _reader(settings, rpc_url, consortium) as ledger:
        return verify_model_hash(ledger.session.client, model_hash)


# -- the audit ---------------------------------------------------------------------------------------


def audit_ledger(
    settings: Settings,
    *,
    rpc_url: str | None = None,
    consortium: Path | None = None,
    database: Database | None = None,
) -> LedgerAuditResult:
    """Replays the ledger and checks it against this home's blobs, database and ballots."""
    try:
        with _reader(settings, rpc_url, consortium) as ledger:
            history = replay(ledger.session.client)
            kit, audited_rpc = ledger.consortium, ledger.rpc_url
    except ChainFileMissing as exc:
        return _chain_gone(settings, exc, database)
    own_db = database is None
    db = database or open_database(settings.db_path)
    notes: list[str] = []
    try:
        federations = _federations_on(history, db, settings, audited_rpc, notes)
        local = {f.id: list_rounds(db, f.id) for f in federations}
        matches = [(f, r, _match(r, history)) for f in federations for r in local[f.id]]
        state_problems = _compare_state(history, matches)
        ballot_problems, ballots = _check_ballots(db, federations, local, history, kit, notes)
    finally:
        if own_db:
            db.close()
    blobs = BlobStore(settings.blob_dir)
    taken_part = {entry.round_id for _, _, entry in matches if entry is not None}
    chain = audit_history(history, blobs, taken_part)
    problems = list(chain.discrepancies)
    problems += _held_candidates(history, blobs, taken_part)
    if kit is not None:
        problems += [f"{r.label} ran under policy {r.policy_digest}, not the consortium's {kit.policy.digest}"
                     for r in history.rounds if r.policy_digest != kit.policy.digest]
    problems += state_problems + ballot_problems
    return LedgerAuditResult(
        ok=not problems,
        discrepancies=problems,
        chain=chain,
        rounds_compared=sum(1 for _, _, entry in matches if entry is not None),
        ballots_checked=ballots,
        notes=chain.notes + notes,
    )


def _chain_gone(settings: Settings, exc: ChainFileMissing, database: Database | None) -> LedgerAuditResult:
    """The embedded chain's file is gone: a failed audit if this home's database holds rounds
    finalised on it (the record they were checked against is lost), else the error itself."""
    db = database or open_database(settings.db_path)
    try:
        finalised = sum(f.rounds_finalized for f in list_federations(db) if _on_embedded_chain(f.config, settings))
    finally:
        if database is None:
            db.close()
    if not finalised:
        raise exc
    problem = (f"the ledger's chain file {exc.path} is {'empty' if exc.empty else 'missing'}, but this data "
               f"directory's database records {finalised} finalised round{'s' if finalised != 1 else ''} on it: "
               "the chain they were recorded on is gone (restore the file from a backup)")
    chain = AuditReport(ok=False, discrepancies=[problem], rounds_checked=0, events_checked=0, blobs_checked=0)
    return LedgerAuditResult(ok=False, discrepancies=[problem], chain=chain, rounds_compared=0)


def _on_embedded_chain(config: dict[str, Any], settings: Settings) -> bool:
    """Whether a federation run recorded its rounds on this home's embedded chain."""
    return ("ledger" in config and config["ledger"] is not False and "contract" not in config
            and not (config.get("rpc_url") or settings.rpc_url))


def _federations_on(history: LedgerHistory, db: Database, settings: Settings, audited_rpc: str | None,
                    notes: list[str]) -> list[FederationView]:
    """The federation runs of the local database recorded on the audited ledger, oldest first;
    a note for each one recorded elsewhere."""
    out = []
    for federation in sorted(list_federations(db), key=lambda f: f.id):
        config = federation.config
        where: str | None = None
        if config.get("ledger") is False:
            where = "without the ledger"
        elif "contract" in config and str(config["contract"]).lower() != history.contract.lower():
            where = f"on the contract {config['contract']}"
        elif "ledger" in config:  # a simulation: on the embedded chain, or the node it was given
            recorded = config.get("rpc_url") or settings.rpc_url
            if recorded != audited_rpc:
                where = f"on {recorded or 'the embedded chain'}"
        if where is None:
            out.append(federation)
        else:
            notes.append(f"federation {federation.id} was recorded {where}; not compared")
    return out


def _match(local: RoundView, history: LedgerHistory) -> RoundEntry | None:
    """The chain's attempt a local round records: the latest of its number from the same
    starting model (a retried round number keeps only its last attempt locally)."""
    attempts = history.attempts_of(local.number)
    same_start = [a for a in attempts if a.previous_hash == local.previous_hash]
    if same_start:
        return same_start[-1]
    return attempts[-1] if attempts else None


def _compare_state(history: LedgerHistory,
                   matches: list[tuple[FederationView, RoundView, RoundEntry | None]]) -> list[str]:
    problems: list[str] = []
    recorded: set[int] = set()
    for federation, local, entry in matches:
        where = f"federation {federation.id} round {local.number}"
        if entry is None:
            problems.append(f"{where}: {local.status} locally from model {local.previous_hash}, but the ledger "
                            "has no such round")
            continue
        recorded.add(entry.round_id)
        problems.extend(f"{where}: {p}" for p in _compare_round(local, entry))
    for entry in history.finalized():
        if entry.round_id not in recorded:
            problems.append(f"ledger {entry.label} finalised with {entry.global_hash} is missing from the local "
                            "database")
    return problems


def _compare_round(local: RoundView, chain: RoundEntry) -> list[str]:
    problems: list[str] = []
    if local.status != chain.state:
        problems.append(f"status is {local.status} locally, {chain.state} on the ledger ({chain.label})")
    if local.previous_hash != chain.previous_hash:
        problems.append(f"starting model is {local.previous_hash} locally, {chain.previous_hash} on the ledger")
    if local.status == "finalized" and local.global_hash != chain.global_hash:
        problems.append(f"global model is {local.global_hash} locally, {chain.global_hash} on the ledger")
    if local.status == "finalized" and sorted(local.contributors) != sorted(chain.contributors):
        problems.append(f"contributors are {sorted(local.contributors)} locally, {sorted(chain.contributors)} "
                        "on the ledger")
    policy = recorded_policy(local.policy)
    if policy is None or policy.digest() != chain.policy_digest:
        problems.append(f"the verification policy recorded here (thresholds with digest "
                        f"{policy.digest() if policy else 'unreadable'}) is not the one the round ran under on "
                        f"the ledger ({chain.policy_digest})")
    elif local.policy.get("digest", chain.policy_digest) != chain.policy_digest:
        problems.append(f"the policy digest recorded here is {local.policy['digest']}, "
                        f"{chain.policy_digest} on the ledger")
    local_models = {m.hospital_id: m for m in local.models}
    for commitment in chain.commitments:
        model = local_models.get(commitment.hospital_id)
        if model is None:
            problems.append(f"{commitment.hospital_id} committed on the ledger but not in the local database")
            continue
        if model.model_hash != commitment.model_hash:
            problems.append(f"{model.hospital_id}'s model is {model.model_hash} locally, {commitment.model_hash} "
                            "on the ledger")
        decision = chain.decision_for(model.hospital_id)
        if decision is None:
            if model.status in ("accepted", "rejected"):
                problems.append(f"{model.hospital_id}'s model is {model.status} locally, undecided on the ledger")
            continue
        verdict = "accepted" if decision.accepted else "rejected"
        if model.status != verdict:
            problems.append(f"{model.hospital_id}'s model is {model.status} locally, {verdict} on the ledger")
        if not chain.unverified and (model.accepts, model.rejects, model.registered) != (
                decision.accepts, decision.rejects, chain.registered):
            problems.append(f"{model.hospital_id}'s decision is {model.accepts}/{model.rejects} of "
                            f"{model.registered} locally, {decision.accepts}/{decision.rejects} of "
                            f"{chain.registered} on the ledger")
    for hospital_id in sorted(set(local_models) - {c.hospital_id for c in chain.commitments}):
        problems.append(f"{hospital_id}'s model is in the local database but was never committed on the ledger")
    local_votes = {(v.validator_id, v.candidate_id): v.accept for m in local.models for v in m.votes}
    chain_votes = {(v.validator_id, c): c in v.accepted for v in chain.votes for c in chain.candidates}
    for key in sorted(set(local_votes) | set(chain_votes)):
        if local_votes.get(key) != chain_votes.get(key):
            problems.append(f"{key[0]}'s vote on {key[1]} is {_vote(local_votes.get(key))} locally, "
                            f"{_vote(chain_votes.get(key))} on the ledger")
    return problems


def _vote(value: bool | None) -> str:
    return "missing" if value is None else ("accept" if value else "reject")


def _held_candidates(history: LedgerHistory, blobs: BlobStore, taken_part: set[int]) -> list[str]:
    """A committed candidate's model is not every home's to hold, but one that is held must be
    the model committed."""
    problems = []
    for entry in history.rounds:
        if entry.round_id not in taken_part:
            continue
        for c in entry.commitments:
            if blobs.has(c.model_hash):
                problem = check_blob(blobs, c.model_hash, f"{entry.label} {c.hospital_id}'s candidate")
                if problem:
                    problems.append(problem)
    return problems


def _check_ballots(db: Database, federations: list[FederationView], local: dict[int, list[RoundView]],
                   history: LedgerHistory, kit: Consortium | None, notes: list[str]) -> tuple[list[str], int]:
    """Every ballot this home holds (its node's, or every simulated node's) opens to its scores
    hash on the ledger, accepts what the round's policy gives for its scores, and is what the
    local database shows of that validator's scores."""
    problems: list[str] = []
    checked = 0
    for federation in federations:
        attackers = {h.hospital_id for h in federation.hospitals if h.malicious}
        for role in role_names(db, federation.id, NODE_ROLE):
            document = SqliteRoleState(db, federation.id, role).load()
            for key, raw in sorted(document.get("ballots", {}).items(), key=lambda kv: int(kv[0])):
                try:
                    ballot = Ballot.from_dict(raw)
                except (KeyError, TypeError, ValueError, AssertionError) as exc:
                    problems.append(f"the ballot of attempt {key} in this home's {role} state is unreadable ({exc})")
                    continue
                checked += 1
                problem = _check_ballot(ballot, history, local[federation.id], kit, notes)
                if problem and ballot.validator_id in attackers and "policy accepts" in problem:
                    # A simulated attacker votes against its own scores: that is its attack.
                    notes.append(f"{problem} (a simulated attacker)")
                    problem = None
                # The local database keeps a round as its last attempt went: an earlier attempt's
                # ballot (of a round aborted and reopened) is checked against the ledger only.
                attempts = history.attempts_of(ballot.round_number)
                if not problem and attempts and attempts[-1].round_id == ballot.attempt:
                    problem = _scores_on_record(ballot, local[federation.id])
                if problem:
                    problems.append(problem)
    return problems, checked


def _scores_on_record(ballot: Ballot, local: list[RoundView]) -> str | None:
    """The scores the local database shows for this validator's votes are its ballot's."""
    rounds = [r for r in local if r.number == ballot.round_number]
    for round_ in rounds[-1:]:
        for model in round_.models:
            for vote in model.votes:
                if vote.validator_id != ballot.validator_id or not vote.scores:
                    continue
                held = ballot.scores.get(vote.candidate_id)
                if held is None or {k: float(v) for k, v in held.as_dict().items()} != dict(vote.scores):
                    return (f"the scores recorded for {ballot.validator_id}'s vote on {vote.candidate_id} in round "
                            f"{ballot.round_number} are not those of its ballot (which opens to the ledger's hash)")
    return None


def _check_ballot(ballot: Ballot, history: LedgerHistory, local: list[RoundView], kit: Consortium | None,
                  notes: list[str]) -> str | None:
    who = f"{ballot.validator_id}'s ballot in round {ballot.round_number} (attempt {ballot.attempt})"
    entry = history.attempt(ballot.attempt)
    if entry is None or entry.number != ballot.round_number:
        return f"{who} is for a round attempt the ledger does not hold"
    vote = entry.vote_of(ballot.validator_id)
    if vote is None:
        notes.append(f"{who} was never cast on the ledger")
        return None
    if scores_hash(ballot.scores, ballot.salt) != vote.scores_hash:
        return f"{who} does not open to its scores hash {vote.scores_hash} on the ledger"
    if sorted(ballot.accepted) != sorted(vote.accepted):
        return f"{who} accepts {sorted(ballot.accepted)}, its vote on the ledger {sorted(vote.accepted)}"
    policy = _policy_of(entry, local, kit)
    if policy is None:
        notes.append(f"{who}: no policy with the round's digest is recorded here; its votes were not checked "
                     "against the policy")
        return None
    accepted = policy.accepted(ballot.scores)
    expected = [c for c in entry.candidates if c in accepted]
    if sorted(expected) != sorted(vote.accepted):
        return (f"{who} accepts {sorted(vote.accepted)}, but the round's policy accepts {sorted(expected)} "
                "for its scores")
    return None


def _policy_of(entry: RoundEntry, local: list[RoundView], kit: Consortium | None) -> VerificationPolicy | None:
    """The policy the round ran under, as recorded here, only if it hashes to the round's digest."""
    candidates = [recorded_policy(r.policy) for r in local if r.number == entry.number]
    if kit is not None:
        candidates.append(kit.verification_policy())
    return next((p for p in candidates if p is not None and p.digest() == entry.policy_digest), None)


# -- text ---------------------------------------------------------------------------------------------


def format_show(history: LedgerHistory) -> str:
    """`ledger show` as text: each round attempt with its models, decisions and votes."""
    lines = [
        f"ledger {history.contract} on {history.endpoint} (chain {history.chain_id}), "
        f"block {history.head_block}, {len(history.authorities)} hospitals registered, {history.events} events"
    ]
    for r in history.rounds:
        head = f"{r.label} {r.state}: start {r.previous_hash[:12]}, policy {r.policy_digest[:12]}"
        if r.global_hash:
            head += f" -> global {r.global_hash[:12]}, contributors {', '.join(r.contributors) or 'none'}"
        if r.abort_reason:
            head += f" (aborted: {r.abort_reason})"
        if r.unverified:
            head += " (unverified: every candidate taken without votes)"
        lines.append(head)
        for c in r.commitments:
            d = r.decision_for(c.hospital_id)
            verdict = "undecided" if d is None else (
                f"{'accepted' if d.accepted else 'rejected'} {d.accepts}/{r.registered}")
            lines.append(f"  model {c.hospital_id} {c.model_hash[:12]}: {verdict}")
        for v in r.votes:
            lines.append(f"  vote {v.validator_id}: accepts {', '.join(v.accepted) or 'none'} "
                         f"(scores hash {v.scores_hash[:12]})")
        for hid in r.dropouts:
            lines.append(f"  dropout {hid}: no commitment")
        for hid in r.abstainers:
            lines.append(f"  abstained {hid}: no vote")
    return "\n".join(lines)


def format_audit(result: LedgerAuditResult) -> str:
    """`ledger audit` as text: OK, or FAILED with the first discrepancy first."""
    chain = result.chain
    summary = (
        f"{chain.events_checked} events, {chain.rounds_checked} rounds, {chain.blobs_checked} model blobs, "
        f"{result.rounds_compared} rounds compared with the local database, {result.ballots_checked} ballots"
    )
    if result.ok:
        return "\n".join([f"ledger audit OK: {summary}", *result.notes])
    return "\n".join(
        [f"ledger audit FAILED: {summary}", *(f"  {d}" for d in result.discrepancies), *result.notes]
    )


def audit_as_dict(result: LedgerAuditResult) -> dict[str, object]:
    """The audit as a JSON-ready dict (`ledger audit --json`)."""
    return {
        "ok": result.ok,
        "first_discrepancy": result.first_discrepancy,
        "discrepancies": list(result.discrepancies),
        "events_checked": result.chain.events_checked,
        "rounds_checked": result.chain.rounds_checked,
        "blobs_checked": result.chain.blobs_checked,
        "rounds_compared": result.rounds_compared,
        "ballots_checked": result.ballots_checked,
        "notes": list(result.notes),
    }


# The CLI's names for the two use cases (`ledger audit`, `ledger show`).
audit = audit_ledger
show = show_ledger

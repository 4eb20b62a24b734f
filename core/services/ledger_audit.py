"""The "audit ledger" and "show ledger" use cases: the chain checked against itself, the model
blobs and this hospital's SQLite state.

`audit_ledger` is what `python main.py ledger audit` runs (exit 0 only when `ok`); `show_ledger`
what `ledger show` lists; both open the ledger read-only, so they need no keystore password and
can run beside the app.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from core.federation.policy import VerificationPolicy
from core.settings import Settings
from core.state.blobs import BlobStore
from core.state.db import Database, open_database
from core.state.queries import RoundView, list_federations, list_rounds
from ledger.audit import AuditReport, audit_chain
from ledger.client import LedgerEvent
from ledger.explorer import BlockView, list_blocks, list_events, verify_model_hash
from ledger.history import LedgerHistory, RoundEntry, replay
from ledger.session import LedgerSession, LedgerSettings, open_ledger

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LedgerAuditResult:
    """The whole audit: `ok` only when the chain, the blobs and the local database all agree."""

    ok: bool
    discrepancies: list[str]
    chain: AuditReport
    rounds_compared: int
    notes: list[str] = field(default_factory=list)

    @property
    def first_discrepancy(self) -> str | None:
        return self.discrepancies[0] if self.discrepancies else None


def _ledger_settings(settings: Settings, rpc_url: str | None, contract_address: str | None) -> LedgerSettings:
    return LedgerSettings(
        home=settings.home,
        rpc_url=rpc_url or settings.rpc_url,
        contract_address=contract_address,
        keystore_path=settings.keystore_dir,
        blob_path=settings.blob_dir,
    )


def show_ledger(
    settings: Settings, *, rpc_url: str | None = None, contract_address: str | None = None
) -> LedgerHistory:
    """Every round on the ledger with its commitments, votes, decisions and failures."""
    with _reader(settings, rpc_url, contract_address) as session:
        return replay(session.client)


@contextmanager
def _reader(settings: Settings, rpc_url: str | None, contract_address: str | None) -> Iterator[LedgerSession]:
    """A read-only ledger session for one query."""
    session = open_ledger(_ledger_settings(settings, rpc_url, contract_address), read_only=True)
    try:
        yield session
    finally:
        session.close()


def recent_blocks(
    settings: Settings, *, limit: int = 20, before: int | None = None, rpc_url: str | None = None
) -> list[BlockView]:
    """The explorer's block list: newest first, each transaction decoded to its contract call."""
    with _reader(settings, rpc_url, None) as session:
        return list_blocks(session.client, limit=limit, before=before)


def recent_events(
    settings: Settings, *, limit: int = 100, name: str | None = None, rpc_url: str | None = None
) -> list[LedgerEvent]:
    """The explorer's event list: newest first, decoded, optionally of one kind."""
    with _reader(settings, rpc_url, None) as session:
        return list_events(session.client, limit=limit, name=name)


def is_model_on_ledger(settings: Settings, model_hash: str, *, rpc_url: str | None = None) -> bool:
    """Whether a model hash is a finalised global model or a committed candidate on the ledger."""
    with _reader(settings, rpc_url, None) as session:
        return verify_model_hash(session.client, model_hash)


def audit_ledger(
    settings: Settings,
    *,
    rpc_url: str | None = None,
    contract_address: str | None = None,
    peers: Sequence[str] = (),
    database: Database | None = None,
) -> LedgerAuditResult:
    """Replays the ledger, checks every global-model blob, and compares the local database with it."""
    with _reader(settings, rpc_url, contract_address) as session:
        report, history = audit_chain(session.client, BlobStore(session.settings.blob_dir), peers=peers)
    own_db = database is None
    db = database or open_database(settings.db_path)
    notes = list(report.notes)
    try:
        state_problems, compared = compare_with_state(history, db, notes)
    finally:
        if own_db:
            db.close()
    discrepancies = report.discrepancies + state_problems
    return LedgerAuditResult(
        ok=not discrepancies,
        discrepancies=discrepancies,
        chain=report,
        rounds_compared=compared,
        notes=notes,
    )


def compare_with_state(
    history: LedgerHistory, db: Database, notes: list[str] | None = None
) -> tuple[list[str], int]:
    """Discrepancies between the local database's rounds and the ledger's, and how many were compared.

    A local round matches the ledger's attempt with the same number and starting model (and the
    same outcome: finalised with the same global model, or aborted); later federation runs that
    number their rounds from 1 again match later attempts, in order.
    """
    problems: list[str] = []
    unmatched = list(history.rounds)
    compared = 0
    federations = sorted(list_federations(db), key=lambda f: f.id)
    for federation in federations:
        if federation.config.get("ledger") is False:
            if notes is not None:
                notes.append(f"federation {federation.id} was recorded without the ledger; not compared")
            continue
        for local in list_rounds(db, federation.id):
            where = f"federation {federation.id} round {local.number}"
            match = _match(local, unmatched)
            if match is None:
                if local.status == "open":
                    continue  # interrupted before the ledger heard of it, or still running
                problems.append(
                    f"{where}: {local.status} locally with global model "
                    f"{local.global_hash or local.previous_hash}, but the ledger has no such round"
                )
                continue
            unmatched.remove(match)
            compared += 1
            problems.extend(f"{where}: {p}" for p in _compare_round(local, match))
    for entry in unmatched:
        if entry.state == "finalized":
            problems.append(
                f"ledger round {entry.number} (id {entry.round_id}) finalised with {entry.global_hash} "
                "is missing from the local database"
            )
    return problems, compared


def _match(local: RoundView, candidates: list[RoundEntry]) -> RoundEntry | None:
    same_start = [
        c for c in candidates if c.number == local.number and c.previous_hash == local.previous_hash
    ]
    if local.status == "finalized":
        return next(
            (c for c in same_start if c.state == "finalized" and c.global_hash == local.global_hash),
            next((c for c in same_start if c.state == "finalized"), None),
        )
    if local.status == "aborted":
        return next((c for c in same_start if c.state == "aborted"), None)
    return next((c for c in same_start if c.state == "open"), None)


def _compare_round(local: RoundView, chain: RoundEntry) -> list[str]:
    problems: list[str] = []
    if local.status != chain.state:
        problems.append(f"status is {local.status} locally, {chain.state} on the ledger")
    if local.status == "finalized" and local.global_hash != chain.global_hash:
        problems.append(f"global model is {local.global_hash} locally, {chain.global_hash} on the ledger")
    if local.status == "finalized" and sorted(local.contributors) != sorted(chain.contributors):
        problems.append(
            f"contributors are {sorted(local.contributors)} locally, "
            f"{sorted(chain.contributors)} on the ledger"
        )
    digest = _policy_digest(local.policy)
    if digest is not None and digest != chain.policy_digest:
        problems.append("the verification policy differs from the one recorded on the ledger")
    committed = {c.hospital_id: c for c in chain.commitments}
    for model in local.models:
        commitment = committed.get(model.hospital_id)
        if commitment is None:
            problems.append(f"{model.hospital_id}'s model {model.model_hash} has no commitment on the ledger")
            continue
        if commitment.model_hash != model.model_hash:
            problems.append(
                f"{model.hospital_id}'s model is {model.model_hash} locally, "
                f"{commitment.model_hash} on the ledger"
            )
        decision = chain.decision_for(model.hospital_id)
        if decision is not None:
            chain_status = "accepted" if decision.accepted else "rejected"
            local_accepted = model.status == "accepted"
            if local_accepted != decision.accepted:
                problems.append(
                    f"{model.hospital_id}'s model is {model.status} locally, {chain_status} on the ledger"
                )
            if (model.accepts, model.rejects) != (
                decision.accepts,
                decision.rejects,
            ) and model.status != "failed":
                problems.append(
                    f"{model.hospital_id}'s votes are {model.accepts}/{model.rejects} locally, "
                    f"{decision.accepts}/{decision.rejects} on the ledger"
                )
    local_hospitals = {m.hospital_id for m in local.models}
    for hospital_id in sorted(set(committed) - local_hospitals):
        problems.append(f"{hospital_id} committed on the ledger but not in the local database")
    local_votes = {(v.validator_id, v.candidate_id): v.accept for m in local.models for v in m.votes}
    chain_votes = {(v.validator_id, v.candidate_id): v.accept for v in chain.votes}
    for key in sorted(set(local_votes) | set(chain_votes)):
        if local_votes.get(key) != chain_votes.get(key):
            problems.append(
                f"{key[0]}'s vote on {key[1]} is {_vote(local_votes.get(key))} locally, "
                f"{_vote(chain_votes.get(key))} on the ledger"
            )
    return problems


def _vote(value: bool | None) -> str:
    return "missing" if value is None else ("accept" if value else "reject")


def _policy_digest(policy: dict[str, object]) -> str | None:
    """The digest the round's stored policy has, when the database records one."""
    if "digest" in policy:
        return str(policy["digest"])
    try:
        return VerificationPolicy(**policy).digest()  # type: ignore[arg-type]
    except TypeError:
        logger.debug("policy without a digest: %s", json.dumps(policy))
        return None


def format_show(history: LedgerHistory) -> str:
    """`ledger show` as text: each round with its models, decisions and votes."""
    lines = [
        f"ledger {history.contract} on {history.endpoint} (chain {history.chain_id}), "
        f"block {history.head_block}, {len(history.authorities)} authorities, {history.events} events"
    ]
    for r in history.rounds:
        head = f"round {r.number} (id {r.round_id}) {r.state}: start {r.previous_hash[:12]}"
        if r.global_hash:
            head += f" -> global {r.global_hash[:12]}, contributors {', '.join(r.contributors) or 'none'}"
        if r.abort_reason:
            head += f" ({r.abort_reason})"
        lines.append(head)
        for c in r.commitments:
            d = r.decision_for(c.hospital_id)
            verdict = (
                "undecided"
                if d is None
                else f"{'accepted' if d.accepted else 'rejected'} {d.accepts}/{d.registered}"
            )
            lines.append(f"  model {c.hospital_id} {c.model_hash[:12]}: {verdict}")
            for v in (v for v in r.votes if v.candidate_id == c.hospital_id):
                lines.append(
                    f"    {v.validator_id}: {'accept' if v.accept else 'reject'} "
                    f"acc {v.correct}/{v.total} cos {v.cosine:.3f} norm {v.norm:.3g}"
                )
        for f in r.failures:
            lines.append(f"  failure {f.hospital_id} at {f.stage}: {f.message}")
    return "\n".join(lines)


def format_audit(result: LedgerAuditResult) -> str:
    """`ledger audit` as text: OK, or FAILED with the first discrepancy first."""
    chain = result.chain
    summary = (
        f"{chain.events_checked} events, {chain.rounds_checked} rounds, {chain.blobs_checked} model blobs, "
        f"{result.rounds_compared} rounds compared with the local database"
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
        "notes": list(result.notes),
    }


# The CLI's names for the two use cases (`ledger audit`, `ledger show`).
audit = audit_ledger
show = show_ledger

"""The ledger audit: replays every event, checks the rules, and checks each model blob against its hash.

It answers "does what this hospital holds agree with the chain?": each decision follows from the
recorded votes, each round's contributors are exactly its accepted models, and each global model
on disk (or fetched from a peer) hashes to what the chain recorded. The report names the first
discrepancy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.errors import BlobMismatch, BlobNotFound
from core.state.blobs import BlobStore
from ledger.blobs import fetch_blob
from ledger.client import LedgerClient
from ledger.errors import LedgerError
from ledger.history import LedgerHistory, replay

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditReport:
    """`ok` when every check held; otherwise `discrepancies` in the order found, the first first."""

    ok: bool
    discrepancies: list[str]
    rounds_checked: int
    events_checked: int
    blobs_checked: int
    notes: list[str] = field(default_factory=list)

    @property
    def first_discrepancy(self) -> str | None:
        return self.discrepancies[0] if self.discrepancies else None


def check_blob(blobs: BlobStore, digest: str, what: str, peers: Sequence[str] = ()) -> str | None:
    """None when the blob is present and intact (fetching it from a peer if missing), else the problem."""
    try:
        blobs.get(digest)
        return None
    except BlobMismatch as exc:
        path = blobs.path(digest)
        return f"{what}: the stored file {path} does not match the hash on the ledger ({exc.actual})"
    except BlobNotFound:
        pass
    for peer in peers:
        try:
            fetch_blob(peer, digest, blobs)
            return None
        except BlobMismatch as exc:
            return f"{what}: peer {peer} served a model that does not match the ledger ({exc.actual})"
        except (BlobNotFound, LedgerError) as exc:  # this peer lacks it or is down: ask the next
            logger.info("peer %s could not provide %s: %s", peer, digest, exc)
    return f"{what}: model {digest} is not in the blob store" + (" nor at any peer" if peers else "")


def audit_chain(
    client: LedgerClient, blobs: BlobStore, *, peers: Sequence[str] = ()
) -> tuple[AuditReport, LedgerHistory]:
    """Replays the ledger and checks every finalised round's global model blob, and the blob of
    every model a round started from (a federation's initial model) where this store has it."""
    history = replay(client)
    discrepancies = list(history.problems)
    checked = 0
    notes: list[str] = []
    finalized = {e.global_hash for e in history.rounds if e.state == "finalized" and e.global_hash}
    starts_seen: set[str] = set()
    for entry in history.rounds:
        start = entry.previous_hash
        if start and start not in finalized and start not in starts_seen:
            starts_seen.add(start)
            if blobs.has(start):
                problem = check_blob(blobs, start, f"round {entry.number} (id {entry.round_id}) starting model")
                checked += 1
                if problem:
                    discrepancies.append(problem)
            else:
                notes.append(f"the starting model {start[:12]} of round {entry.number} is not stored here")
        if entry.state != "finalized" or entry.global_hash is None:
            continue
        problem = check_blob(
            blobs, entry.global_hash, f"round {entry.number} (id {entry.round_id}) global model", peers
        )
        checked += 1
        if problem:
            discrepancies.append(problem)
    for entry in history.rounds:
        if entry.state == "open":
            notes.append(f"round {entry.number} is still open on the ledger")
    report = AuditReport(
        ok=not discrepancies,
        discrepancies=discrepancies,
        rounds_checked=len(history.rounds),
        events_checked=history.events,
        blobs_checked=checked,
        notes=notes,
    )
    return report, history

"""The chain half of the ledger audit: the replayed history's problems, and the model blobs a
home must hold, each checked against the hash the chain recorded.

Which blobs a home must hold: the starting model of every round attempt it took part in, and
the global model of each of those that was finalised (its archive stores both as it records the
round). A blob that is missing and one whose bytes changed are the same discrepancy: the home
can no longer show the model the chain names.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from core.errors import BlobMismatch, BlobNotFound
from core.state.blobs import BlobStore
from ledger.client import LedgerClient
from ledger.history import LedgerHistory, RoundEntry, replay


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


def check_blob(blobs: BlobStore, digest: str, what: str) -> str | None:
    """None when the blob is in the store and hashes to its name, else the discrepancy."""
    try:
        blobs.get(digest)
    except BlobNotFound:
        return f"{what} {digest} is not in the blob store {blobs.root}"
    except BlobMismatch as exc:
        return (f"{what} {digest}: the stored file {blobs.path(digest)} does not hash to it, the hash on the "
                f"ledger; its bytes hash to {exc.actual}")
    return None


def required_blobs(rounds: list[RoundEntry]) -> list[tuple[str, str]]:
    """(digest, what) of every model these round attempts need held, each digest once, in order."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in rounds:
        for digest, what in ((entry.previous_hash, "starting model"), (entry.global_hash, "global model")):
            if digest and digest not in seen:
                seen.add(digest)
                out.append((digest, f"{entry.label} {what}"))
    return out


def audit_history(history: LedgerHistory, blobs: BlobStore,
                  taken_part: Collection[int] | None = None) -> AuditReport:
    """The history's problems, then every blob the attempts in `taken_part` (round ids; None:
    every attempt, as in a simulation's shared store) need, checked."""
    rounds = [r for r in history.rounds if taken_part is None or r.round_id in taken_part]
    discrepancies = list(history.problems)
    needed = required_blobs(rounds)
    for digest, what in needed:
        problem = check_blob(blobs, digest, what)
        if problem:
            discrepancies.append(problem)
    notes = [f"{r.label} is still open on the ledger" for r in history.rounds if r.state == "open"]
    return AuditReport(ok=not discrepancies, discrepancies=discrepancies, rounds_checked=len(history.rounds),
                       events_checked=history.events, blobs_checked=len(needed), notes=notes)


def audit_chain(client: LedgerClient, blobs: BlobStore,
                taken_part: Collection[int] | None = None) -> tuple[AuditReport, LedgerHistory]:
    """Replays the ledger and checks the blobs of the attempts in `taken_part` (None: all)."""
    history = replay(client)
    return audit_history(history, blobs, taken_part), history

"""What a validator keeps of its vote: its scores, salted and hashed for the ledger.

Only the hash goes on chain; the scores stay in the validator's own state, and the audit opens
them against the hash (so anyone the validator shows them to can check they are what it voted on).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.federation.types import Scores


@dataclass(frozen=True)
class Ballot:
    """One validator's vote in one round attempt: accept bits and the scores behind them."""

    round_number: int
    attempt: int
    validator_id: str
    accepted: tuple[str, ...]
    scores: dict[str, Scores]  # candidate id -> scores
    salt: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def scores_hash(self) -> str:
        return scores_hash(self.scores, self.salt)

    def as_dict(self) -> dict[str, object]:
        return {
            "round_number": self.round_number,
            "attempt": self.attempt,
            "validator_id": self.validator_id,
            "accepted": list(self.accepted),
            "scores": {c: s.as_dict() for c, s in self.scores.items()},
            "salt": self.salt,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Ballot:
        raw_scores = data["scores"]
        assert isinstance(raw_scores, dict)
        return cls(
            round_number=int(data["round_number"]),  # type: ignore[call-overload]
            attempt=int(data["attempt"]),  # type: ignore[call-overload]
            validator_id=str(data["validator_id"]),
            accepted=tuple(data["accepted"]),  # type: ignore[arg-type]
            scores={c: scores_from_dict(s) for c, s in raw_scores.items()},
            salt=str(data["salt"]),
        )


def scores_from_dict(data: Mapping[str, float]) -> Scores:
    return Scores(
        correct=int(data["correct"]),
        total=int(data["total"]),
        cosine=float(data["cosine"]),
        norm=float(data["norm"]),
        reference_accuracy=float(data["reference_accuracy"]),
        reference_norm=float(data["reference_norm"]),
        margin=float(data.get("margin", 0.0)),
        reference_margin=float(data.get("reference_margin", 0.0)),
        global_margin=float(data["global_margin"]) if "global_margin" in data else None,
    )


def scores_hash(scores: Mapping[str, Scores], salt: str) -> str:
    """SHA-256 over the salt and the canonical JSON of every score (floats as repr, so exact)."""
    canonical = json.dumps(
        {c: {k: repr(v) for k, v in sorted(s.as_dict().items())} for c, s in sorted(scores.items())},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(bytes.fromhex(salt) + canonical.encode()).hexdigest()

"""The verification policy: when an honest validator accepts a candidate, given its scores."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from core.errors import ConfigError
from core.federation.types import Scores


@dataclass(frozen=True)
class VerificationPolicy:
    """Thresholds an honest validator applies to a candidate's scores.

    - accuracy: the candidate may lose at most `max_accuracy_drop` against the validator's own
      update on the validator's own split (catches label flipping, noise, sign flipping);
    - direction: cosine similarity to the validator's own update at least `min_cosine`, as
      FLTrust compares with its root update (catches sign flipping);
    - size: update norm at most `max_norm_ratio` times the validator's own (catches scaling).
    """

    max_accuracy_drop: float = 0.10
    min_cosine: float = 0.0
    max_norm_ratio: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ConfigError("max_accuracy_drop must lie between 0 and 1.")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ConfigError("min_cosine must lie between -1 and 1.")
        if self.max_norm_ratio <= 0.0:
            raise ConfigError("max_norm_ratio must be positive.")

    def reasons_to_reject(self, scores: Scores) -> list[str]:
        reasons: list[str] = []
        if scores.accuracy < scores.reference_accuracy - self.max_accuracy_drop:
            reasons.append(
                f"accuracy {scores.accuracy:.3f} below own {scores.reference_accuracy:.3f} "
                f"- {self.max_accuracy_drop:.2f}"
            )
        if scores.cosine < self.min_cosine:
            reasons.append(f"cosine {scores.cosine:.3f} < {self.min_cosine:.2f}")
        if scores.reference_norm > 0 and scores.norm > self.max_norm_ratio * scores.reference_norm:
            reasons.append(
                f"norm {scores.norm:.3g} > {self.max_norm_ratio:g} x own {scores.reference_norm:.3g}"
            )
        return reasons

    def accepts(self, scores: Scores) -> bool:
        return not self.reasons_to_reject(scores)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def digest(self) -> str:
        """Hex SHA-256 of the canonical JSON form, recorded on the ledger with each round."""
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

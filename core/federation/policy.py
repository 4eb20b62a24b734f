"""The verification policy: when an honest validator accepts a candidate, given its scores."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from core.errors import ConfigError
from core.federation.types import Scores


@dataclass(frozen=True)
class VerificationPolicy:
    """Thresholds an honest validator applies to a candidate's scores.

    - accuracy: the candidate may lose at most `max_accuracy_drop`, widened by `accuracy_z`
      standard errors of the validator's split (a hospital's split may hold a few dozen cases,
      where one case is several points), against the validator's own update on its own split
      (catches label flipping, noise, sign flipping);
    - confidence: the candidate's mean logit margin on the validator's split at least
      `min_margin_ratio` times the validator's own (catches label flipping after convergence,
      when accuracy no longer moves but the flipped model's margins collapse);
    - direction: cosine similarity to the validator's own update at least `min_cosine`, as
      FLTrust compares with its root update. Lenient by default: once the model converges,
      honest updates are mostly sampling noise and nearly orthogonal to each other (measured
      down to -0.44 between honest hospitals on breast cancer), so only updates pointing
      squarely against the validator's own are refused;
    - size: update norm at most `max_norm_ratio` times the validator's own (catches scaling).
    """

    max_accuracy_drop: float = 0.10
    min_cosine: float = -0.7
    max_norm_ratio: float = 3.0
    accuracy_z: float = 2.0
    min_margin_ratio: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ConfigError("max_accuracy_drop must lie between 0 and 1.")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ConfigError("min_cosine must lie between -1 and 1.")
        if self.max_norm_ratio <= 0.0:
            raise ConfigError("max_norm_ratio must be positive.")
        if not -1.0 <= self.min_margin_ratio <= 1.0:
            raise ConfigError("min_margin_ratio must lie between -1 and 1.")
        if not 0.0 <= self.accuracy_z <= 5.0:
            raise ConfigError("accuracy_z must lie between 0 and 5.")

    def accuracy_tolerance(self, scores: Scores) -> float:
        """The allowed accuracy loss for a split of `scores.total` cases."""
        if scores.total <= 0:
            return self.max_accuracy_drop
        # Laplace-smoothed rate, so a validator at 100% still allows for sampling noise.
        p = (scores.reference_accuracy * scores.total + 1.0) / (scores.total + 2.0)
        return self.max_accuracy_drop + self.accuracy_z * math.sqrt(p * (1.0 - p) / scores.total)

    def reasons_to_reject(self, scores: Scores) -> list[str]:
        reasons: list[str] = []
        tolerance = self.accuracy_tolerance(scores)
        if scores.accuracy < scores.reference_accuracy - tolerance:
            reasons.append(
                f"accuracy {scores.accuracy:.3f} below own {scores.reference_accuracy:.3f} - {tolerance:.3f}"
            )
        if scores.reference_margin > 0 and scores.margin < self.min_margin_ratio * scores.reference_margin:
            reasons.append(
                f"margin {scores.margin:.3f} < {self.min_margin_ratio:g} x own {scores.reference_margin:.3f}"
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

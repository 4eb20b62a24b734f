"""The verification policy: which candidates an honest validator accepts, given its scores."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.errors import ConfigError
from core.federation.types import Scores


@dataclass(frozen=True)
class Yardstick:
    """What one validator compares every candidate of a round with."""

    accuracy: float
    margin: float
    norm: float
    # `global_margin_ratio` x the current global model's margin on the split: below it a
    # candidate takes confidence away from the global model; None: no such floor (the rule
    # before it, or a ballot cast before global margins).
    margin_floor: float | None = None


def lower_quantile(values: Sequence[float], q: float) -> float:
    """The smallest value with at least a fraction `q` of `values` at or below it (q=0.5: the
    lower median). While fewer than a fraction q and fewer than 1 - q of the values are an
    attacker's (q=0.5: fewer than half), it lies between the smallest and the largest honest
    value, wherever the attacker puts its own."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# Thresholds added after policies were first recorded, in the order they came; a recorded policy
# lacks a suffix of them. None in each is the rule before it, and is left out of `as_dict`, so a
# recorded policy keeps its digest.
LATER_FIELDS: tuple[str, ...] = ("peer_quantile", "global_margin_ratio", "strict_margin_cases")


@dataclass(frozen=True)
class VerificationPolicy:
    """Thresholds an honest validator applies to the scores it learned of a round's candidates.

    Each candidate is compared with a yardstick (`yardstick`): for accuracy and confidence the
    lower of the validator's own update and the `peer_quantile` quantile of all candidates'
    values on its split (the typical candidate there); for confidence also the current global
    model's while that is not positive (no confidence yet: the margin test waits). On skewed
    data a validator's own update is far better on its own split than any other hospital's
    honest update (measured on diabetes under Dirichlet 0.5: 0.24-0.56 against its own
    0.80-0.92), so comparing with the own update alone rejected honest hospitals; the typical
    candidate is as foreign to the validator's data as the honest one is. While fewer
    than half of the candidates are poisoned (for another quantile q: fewer than q and 1 - q of
    them), that quantile lies within the honest candidates' range (`lower_quantile`), so
    attackers cannot drag it outside; and the accuracy and margin yardsticks are never above the
    own update's, so there the typical candidate only widens what is accepted.

    - accuracy: the candidate may lose at most `max_accuracy_drop`, widened by `accuracy_z`
      standard errors of the validator's split (a hospital's split may hold a few dozen cases,
      where one case is several points), against the yardstick (catches label flipping, noise,
      sign flipping);
    - confidence: the candidate's mean logit margin on the validator's split at least
      `min_margin_ratio` times the yardstick's, or at least `global_margin_ratio` times the
      current global model's (catches label flipping after convergence, when accuracy no longer
      moves but the flipped model's margins collapse). A flipped model is less sure of the true
      classes than the global model it was trained from; an honest update from other patients
      may be much less sure than the validator's own (a split of a dozen cases: measured on
      diabetes IID, honest 0.02 against a yardstick of 0.30), but it does not take confidence
      away from the global model, so it is not refused for it. On a split of at least
      `strict_margin_cases` cases the ratio is 1: a candidate less sure than the typical one
      and than the global model is refused. Adaptive attacks (ALIE, min-max, min-sum) and
      backdoors stay within every other bound but take confidence away from the global model
      (measured on the tissue images, IID, 58-case splits, min-max, rounds 4-5: attackers
      0.72-0.96 x the global model's margin, honest candidates 1.2-1.6 x); on a split of a dozen
      cases the margins are too noisy for that (diabetes, 14 cases: honest candidates fell below
      both);
    - direction: cosine similarity to the validator's own update at least `min_cosine`, as
      FLTrust compares with its root update. Lenient by default: once the model converges,
      honest updates are mostly sampling noise and nearly orthogonal to each other (measured
      down to -0.44 between honest hospitals on breast cancer), so only updates pointing
      squarely against the validator's own are refused;
    - size: update norm at most `max_norm_ratio` times the `peer_quantile` quantile of the
      candidates' norms (catches scaling; on skewed data honest norms differ by up to 2x, so
      the typical norm is a steadier yardstick than the validator's own).

    `peer_quantile` None is the rule of policies recorded before the peer yardstick existed
    (consortium files, rounds on chain): every yardstick is the validator's own update, so
    those keep meaning, and hashing to, what they did; `global_margin_ratio` None likewise
    for those recorded before the global model's floor, and `strict_margin_cases` None for those
    recorded before the strict test on large splits (`LATER_FIELDS`).
    """

    max_accuracy_drop: float = 0.10
    min_cosine: float = -0.7
    max_norm_ratio: float = 2.0
    accuracy_z: float = 2.0
    min_margin_ratio: float = 0.2
    peer_quantile: float | None = 0.5
    global_margin_ratio: float | None = 1.0
    strict_margin_cases: float | None = 40.0

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
        if self.peer_quantile is not None and not 0.0 < self.peer_quantile <= 1.0:
            raise ConfigError("peer_quantile must lie in (0, 1].")
        if self.global_margin_ratio is not None and not 0.0 <= self.global_margin_ratio <= 10.0:
            raise ConfigError("global_margin_ratio must lie between 0 and 10.")
        if self.strict_margin_cases is not None and not 1.0 <= self.strict_margin_cases <= 1e9:
            raise ConfigError("strict_margin_cases must be a number of cases of at least 1.")
        present = [getattr(self, name) is not None for name in LATER_FIELDS]
        if any(later and not earlier for earlier, later in zip(present, present[1:])):
            raise ConfigError(f"A policy without one of {', '.join(LATER_FIELDS)} is one recorded before it "
                              "existed, so it has none of those after it either.")

    def accuracy_tolerance(self, accuracy: float, total: int) -> float:
        """The allowed accuracy loss below `accuracy` on a split of `total` cases."""
        if total <= 0:
            return self.max_accuracy_drop
        # Laplace-smoothed rate, so a yardstick at 100% still allows for sampling noise.
        p = (accuracy * total + 1.0) / (total + 2.0)
        return self.max_accuracy_drop + self.accuracy_z * math.sqrt(p * (1.0 - p) / total)

    def margin_ratio(self, total: int) -> float:
        """The share of the yardstick's margin a candidate must reach on a split of `total` cases."""
        if self.strict_margin_cases is not None and total >= self.strict_margin_cases:
            return 1.0
        return self.min_margin_ratio

    def yardstick(self, row: Sequence[Scores]) -> Yardstick:
        """One validator's yardstick for a round, from its scores of every candidate (its own
        included whenever it took part); every entry carries the same own-update values."""
        if not row:
            raise ValueError("a yardstick needs the scores of at least one candidate")
        own, q = row[0], self.peer_quantile
        if q is None:
            return Yardstick(own.reference_accuracy, own.reference_margin, own.reference_norm)
        margin = min(own.reference_margin, lower_quantile([s.margin for s in row], q))
        # While the global model has no confidence on this split yet (margin <= 0, as from
        # random weights), neither can an honest update from other data, so the margin test
        # waits. Capping by a confident global model too let label flippers through (IID, 4
        # hospitals: tests/test_secure_deployment.py).
        if own.global_margin is not None and own.global_margin <= 0:  # None: ballots cast before it
            margin = min(margin, own.global_margin)
        floor = None
        if self.global_margin_ratio is not None and own.global_margin is not None:
            floor = self.global_margin_ratio * own.global_margin
        return Yardstick(
            accuracy=min(own.reference_accuracy, lower_quantile([s.accuracy for s in row], q)),
            margin=margin,
            norm=lower_quantile([s.norm for s in row], q),
            margin_floor=floor,
        )

    def reasons_to_reject(self, scores: Scores, yardstick: Yardstick) -> list[str]:
        reasons: list[str] = []
        tolerance = self.accuracy_tolerance(yardstick.accuracy, scores.total)
        if scores.accuracy < yardstick.accuracy - tolerance:
            reasons.append(
                f"accuracy {scores.accuracy:.3f} below yardstick {yardstick.accuracy:.3f} - {tolerance:.3f}"
            )
        ratio = self.margin_ratio(scores.total)
        if (yardstick.margin > 0 and scores.margin < ratio * yardstick.margin
                and (yardstick.margin_floor is None or scores.margin < yardstick.margin_floor)):
            floor = "" if yardstick.margin_floor is None else f" and < global floor {yardstick.margin_floor:.3f}"
            reasons.append(f"margin {scores.margin:.3f} < {ratio:g} x yardstick {yardstick.margin:.3f}{floor}")
        if scores.cosine < self.min_cosine:
            reasons.append(f"cosine {scores.cosine:.3f} < {self.min_cosine:.2f}")
        if yardstick.norm > 0 and scores.norm > self.max_norm_ratio * yardstick.norm:
            reasons.append(
                f"norm {scores.norm:.3g} > {self.max_norm_ratio:g} x typical {yardstick.norm:.3g}"
            )
        return reasons

    def rejections(self, row: Mapping[str, Scores]) -> dict[str, list[str]]:
        """Every candidate of one validator's round with its reasons to reject (empty: accepted)."""
        if not row:
            return {}
        yardstick = self.yardstick(list(row.values()))
        return {cid: self.reasons_to_reject(scores, yardstick) for cid, scores in row.items()}

    def accepted(self, row: Mapping[str, Scores]) -> tuple[str, ...]:
        """The candidates one validator accepts, given its scores of all of them."""
        return tuple(cid for cid, reasons in self.rejections(row).items() if not reasons)

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        for name in LATER_FIELDS:
            if d[name] is None:  # as recorded before the field existed
                del d[name]
        return d

    @classmethod
    def from_record(cls, thresholds: Mapping[str, float]) -> VerificationPolicy:
        """The policy a consortium file or a round recorded; a field of `LATER_FIELDS` it lacks
        did not exist when it was recorded, and keeps the rule of that time (None)."""
        return cls(**(dict.fromkeys(LATER_FIELDS) | dict(thresholds)))

    def digest(self) -> str:
        """Hex SHA-256 of the canonical JSON form, recorded on the ledger with each round."""
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def recorded_thresholds(names: set[str]) -> bool:
    """Whether `names` are the thresholds of a policy of some version: every field, less a
    suffix of `LATER_FIELDS`."""
    every = [f.name for f in fields(VerificationPolicy)]
    return any(names == set(every) - set(LATER_FIELDS[k:]) for k in range(len(LATER_FIELDS) + 1))


def recorded_policy(record: Mapping[str, Any]) -> VerificationPolicy | None:
    """The policy a local round recorded, rebuilt from its thresholds; None when they do not
    make a valid policy. The digest stored beside them is not trusted (it is what a changed
    threshold would leave behind): callers compare the rebuilt policy's own digest."""
    names = {f.name for f in fields(VerificationPolicy)}
    try:
        return VerificationPolicy.from_record({k: float(v) for k, v in record.items() if k in names})
    except (TypeError, ValueError, ConfigError):
        return None

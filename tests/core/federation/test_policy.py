"""The honest validator's policy: each criterion rejects what it is for and nothing else."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.errors import ConfigError
from core.federation.policy import VerificationPolicy
from core.federation.types import Scores

HONEST = Scores(correct=17, total=18, cosine=0.4, norm=1.1, reference_accuracy=18 / 18, reference_norm=1.0,
                margin=7.0, reference_margin=8.0)


def test_honest_scores_pass() -> None:
    assert VerificationPolicy().accepts(HONEST)
    assert VerificationPolicy().reasons_to_reject(HONEST) == []


def test_accuracy_tolerance_widens_for_small_validation_splits() -> None:
    policy = VerificationPolicy()
    one_case_worse_of_18 = replace(HONEST, correct=15)  # 0.833 vs own 1.0
    assert policy.accepts(one_case_worse_of_18)
    same_rate_of_1800 = replace(HONEST, correct=1500, total=1800)
    assert not policy.accepts(same_rate_of_1800)
    assert "accuracy" in policy.reasons_to_reject(same_rate_of_1800)[0]


def test_label_flip_signature_is_rejected_by_margin_even_at_equal_accuracy() -> None:
    flipped = replace(HONEST, correct=18, margin=0.2)
    reasons = VerificationPolicy().reasons_to_reject(flipped)
    assert len(reasons) == 1 and reasons[0].startswith("margin")


def test_scaled_update_is_rejected_by_norm() -> None:
    scaled = replace(HONEST, norm=5.0)
    assert VerificationPolicy().reasons_to_reject(scaled)[0].startswith("norm")


def test_opposite_update_is_rejected_by_cosine() -> None:
    flipped = replace(HONEST, cosine=-0.9)
    assert VerificationPolicy().reasons_to_reject(flipped)[0].startswith("cosine")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_accuracy_drop": -0.1}, {"min_cosine": 1.5}, {"max_norm_ratio": 0.0}, {"accuracy_z": 9.0},
     {"min_margin_ratio": 2.0}],
)
def test_invalid_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        VerificationPolicy(**kwargs)


def test_digest_is_stable_and_changes_with_any_threshold() -> None:
    assert VerificationPolicy().digest() == VerificationPolicy().digest()
    assert VerificationPolicy().digest() != VerificationPolicy(max_norm_ratio=2.5).digest()

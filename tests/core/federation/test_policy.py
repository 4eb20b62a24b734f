"""The honest validator's policy: each criterion rejects what it is for and nothing else, against
a yardstick the attackers cannot move outside the honest candidates' range."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.errors import ConfigError
from core.federation.policy import VerificationPolicy, lower_quantile
from core.federation.types import Scores

# A validator's own update on its own split: 18 of 18 right, margin 8, norm 1.
OWN = Scores(correct=18, total=18, cosine=1.0, norm=1.0, reference_accuracy=18 / 18, reference_norm=1.0,
             margin=8.0, reference_margin=8.0, global_margin=6.0)
HONEST = replace(OWN, correct=17, cosine=0.4, norm=1.1, margin=7.0)


def round_of(candidate: Scores, **others: Scores) -> dict[str, Scores]:
    """One validator's row: its own update, two honest peers, the candidate under test."""
    return {"own": OWN, "peer1": HONEST, "peer2": replace(HONEST, norm=0.9), "x": candidate, **others}


def reasons(candidate: Scores, policy: VerificationPolicy | None = None, **others: Scores) -> list[str]:
    return (policy or VerificationPolicy()).rejections(round_of(candidate, **others))["x"]


def test_honest_scores_pass() -> None:
    assert VerificationPolicy().accepted(round_of(HONEST)) == ("own", "peer1", "peer2", "x")
    assert reasons(HONEST) == []


def test_accuracy_tolerance_widens_for_small_validation_splits() -> None:
    one_case_worse_of_18 = replace(HONEST, correct=15)  # 0.833 vs yardstick 0.944
    assert reasons(one_case_worse_of_18) == []
    big = dict(total=1800, reference_accuracy=1.0)
    row = {"own": replace(OWN, correct=1800, **big), "peer1": replace(HONEST, correct=1780, **big),
           "peer2": replace(HONEST, correct=1790, **big), "x": replace(HONEST, correct=1500, **big)}
    found = VerificationPolicy().rejections(row)["x"]
    assert found and found[0].startswith("accuracy")


def test_label_flip_signature_is_rejected_by_margin_even_at_equal_accuracy() -> None:
    flipped = replace(HONEST, correct=18, margin=0.2)
    found = reasons(flipped)
    assert len(found) == 1 and found[0].startswith("margin")


def test_scaled_update_is_rejected_by_norm_against_the_typical_candidate() -> None:
    found = reasons(replace(HONEST, norm=5.0))
    assert len(found) == 1 and found[0].startswith("norm") and "typical 1" in found[0]


def test_opposite_update_is_rejected_by_cosine() -> None:
    assert reasons(replace(HONEST, cosine=-0.9))[0].startswith("cosine")


def test_a_skewed_hospitals_honest_update_is_judged_against_the_typical_candidate() -> None:
    # Measured shape (diabetes, Dirichlet 0.5): the validator's own update is right on 80 % of its
    # split, every other hospital's honest update on 24-56 %, margins far below its own.
    own = Scores(correct=20, total=25, cosine=1.0, norm=1.0, reference_accuracy=0.8, reference_norm=1.0,
                 margin=2.1, reference_margin=2.1, global_margin=0.3)
    foreign = [replace(own, correct=c, cosine=0.1, norm=n, margin=m)
               for c, n, m in ((9, 1.2, 0.1), (7, 0.9, 0.05), (10, 1.3, 0.2))]
    noise = replace(own, correct=0, cosine=0.0, norm=1.1, margin=-3.0)
    row = {"own": own, "h1": foreign[0], "h3": foreign[1], "h4": foreign[2], "noise": noise}
    assert VerificationPolicy().accepted(row) == ("own", "h1", "h3", "h4")
    own_only = VerificationPolicy(peer_quantile=1.0)  # the yardstick is the own update itself
    assert own_only.accepted(row) == ("own",)


@pytest.mark.parametrize("seed", range(40))
def test_attackers_too_few_for_the_quantile_cannot_move_it_outside_the_honest_range(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = 0.5 if seed < 20 else float(rng.uniform(0.2, 0.8))
    honest = list(rng.uniform(0.3, 0.9, size=int(rng.integers(3, 9))))
    attackers = 0
    while (attackers + 1) < q * (len(honest) + attackers + 1) and (attackers + 1) < (1 - q) * (
            len(honest) + attackers + 1):
        attackers += 1  # the most the bound allows
    for extreme in (-1e9, 1e9):
        for placed in ([extreme] * attackers, list(rng.uniform(-1e9, 1e9, size=attackers))):
            value = lower_quantile(honest + placed, q)
            assert min(honest) <= value <= max(honest)
    # One attacker more than the bound can move it outside (the bound is tight for q = 0.5).
    if q == 0.5:
        assert lower_quantile(honest + [-1e9] * (attackers + 1), q) == -1e9 or \
            lower_quantile(honest + [1e9] * (attackers + 1), q) == 1e9


def test_the_yardstick_is_never_above_the_own_update_so_peers_only_widen_acceptance() -> None:
    strong_peers = round_of(HONEST, peer3=replace(HONEST, correct=18, margin=30.0), peer4=replace(HONEST, margin=30.0))
    yardstick = VerificationPolicy().yardstick(list(strong_peers.values()))
    assert yardstick.accuracy <= OWN.reference_accuracy and yardstick.margin <= OWN.reference_margin


def test_a_global_model_without_confidence_yet_puts_the_margin_test_off_and_old_ballots_do_without() -> None:
    # Round 1 from random weights: the global model has no margin on the split, nor has an
    # honest update trained on other data.
    start = {k: replace(v, global_margin=-0.05) for k, v in round_of(replace(HONEST, margin=-0.5)).items()}
    assert VerificationPolicy().yardstick(list(start.values())).margin == -0.05
    assert "x" in VerificationPolicy().accepted(start)
    # A confident global model does not lower the yardstick: a collapsed margin is refused.
    confident = {k: replace(v, global_margin=0.5) for k, v in round_of(replace(HONEST, margin=0.2)).items()}
    assert VerificationPolicy().yardstick(list(confident.values())).margin == 7.0
    assert "x" not in VerificationPolicy().accepted(confident)
    old = {k: replace(v, global_margin=None) for k, v in start.items()}
    assert VerificationPolicy().yardstick(list(old.values())).margin == 7.0
    assert "global_margin" not in old["x"].as_dict()  # so an old ballot still opens to its hash


@pytest.mark.parametrize(
    "kwargs",
    [{"max_accuracy_drop": -0.1}, {"min_cosine": 1.5}, {"max_norm_ratio": 0.0}, {"accuracy_z": 9.0},
     {"min_margin_ratio": 2.0}, {"peer_quantile": 0.0}, {"peer_quantile": 1.5},
     {"global_margin_ratio": -0.1}, {"global_margin_ratio": 11.0},
     {"peer_quantile": None, "global_margin_ratio": 1.0}, {"strict_margin_cases": 0.0},
     {"global_margin_ratio": None, "strict_margin_cases": 40.0}],
)
def test_invalid_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        VerificationPolicy(**kwargs)


def test_digest_is_stable_and_changes_with_any_threshold() -> None:
    assert VerificationPolicy().digest() == VerificationPolicy().digest()
    assert VerificationPolicy().digest() != VerificationPolicy(max_norm_ratio=2.5).digest()
    assert VerificationPolicy().digest() != VerificationPolicy(peer_quantile=0.6).digest()
    assert VerificationPolicy().digest() != VerificationPolicy(global_margin_ratio=0.8).digest()
    assert VerificationPolicy().digest() != VerificationPolicy(strict_margin_cases=50.0).digest()


def test_an_empty_round_accepts_nothing() -> None:
    assert VerificationPolicy().accepted({}) == ()


def test_a_policy_recorded_before_the_peer_yardstick_keeps_its_rule_and_digest() -> None:
    recorded = {"max_accuracy_drop": 0.1, "min_cosine": -0.7, "max_norm_ratio": 3.0, "accuracy_z": 2.0,
                "min_margin_ratio": 0.2}
    old = VerificationPolicy.from_record(recorded)
    assert old.peer_quantile is None and old.as_dict() == recorded  # so its digest is the one on record
    # The own update is the yardstick: a skewed peer that the typical candidate lets through is refused.
    row = round_of(replace(HONEST, correct=10), peer1=replace(HONEST, correct=11), peer2=replace(HONEST, correct=10))
    assert "x" not in old.accepted(row) and "x" in VerificationPolicy().accepted(row)
    assert old.yardstick(list(row.values())).norm == OWN.reference_norm


def test_a_candidate_unsure_of_the_split_is_refused_only_when_it_takes_confidence_from_the_global_model() -> None:
    # Measured on diabetes IID (splits of 14 cases): an honest update from other patients had
    # margin 0.02 on a validator's split, its yardstick 0.30, the global model's 0.003.
    def row(global_margin: float) -> dict[str, Scores]:
        at = dict(global_margin=global_margin)
        return {"own": replace(OWN, margin=0.41, reference_margin=0.41, **at),
                "peer1": replace(HONEST, margin=0.30, reference_margin=0.41, **at),
                "peer2": replace(HONEST, margin=0.30, reference_margin=0.41, **at),
                "x": replace(HONEST, margin=0.02, reference_margin=0.41, **at)}

    assert VerificationPolicy().yardstick(list(row(0.003).values())).margin == pytest.approx(0.30)
    assert "x" in VerificationPolicy().accepted(row(0.003))
    # The same margin under a global model sure of the split: the candidate would undo it.
    found = VerificationPolicy().rejections(row(0.5))["x"]
    assert len(found) == 1 and found[0].startswith("margin") and "global floor 0.500" in found[0]
    # Without the floor (global_margin_ratio 0 means a floor of 0) a positive margin passes too;
    # the ratio scales the floor.
    assert "x" in VerificationPolicy(global_margin_ratio=0.0).accepted(row(0.5))
    assert "x" not in VerificationPolicy(global_margin_ratio=0.1).accepted(row(0.5))


def test_a_flipped_model_below_the_global_models_confidence_is_still_refused() -> None:
    # A label flipper trained from the global model is less sure of the true classes than it is
    # (measured on every split and round of diabetes IID label flipping, seeds 0-1).
    flipped = replace(HONEST, correct=18, margin=0.2, global_margin=1.0)
    others = {k: replace(v, global_margin=1.0) for k, v in round_of(flipped).items()}
    assert "x" not in VerificationPolicy().accepted(others)


def test_a_policy_recorded_before_the_global_margin_floor_keeps_its_rule_and_digest() -> None:
    recorded = {"max_accuracy_drop": 0.1, "min_cosine": -0.7, "max_norm_ratio": 2.0, "accuracy_z": 2.0,
                "min_margin_ratio": 0.2, "peer_quantile": 0.5}
    old = VerificationPolicy.from_record(recorded)
    assert old.global_margin_ratio is None and old.as_dict() == recorded  # so its digest is the one on record
    unsure = {k: replace(v, global_margin=0.003) for k, v in round_of(replace(HONEST, margin=0.02)).items()}
    assert "x" not in old.accepted(unsure) and "x" in VerificationPolicy().accepted(unsure)


def large_split_row(candidate_margin: float, total: int, global_margin: float = 1.0) -> dict[str, Scores]:
    """A validator's row on a split of `total` cases, everything right: own update and peers with
    margin 1.4 x the global model's, the candidate with `candidate_margin`."""
    at = dict(total=total, correct=total, reference_accuracy=1.0, global_margin=global_margin)
    return {"own": replace(OWN, margin=1.5, reference_margin=1.5, **at),
            "peer1": replace(HONEST, margin=1.4, reference_margin=1.5, **at),
            "peer2": replace(HONEST, margin=1.3, reference_margin=1.5, **at),
            "x": replace(HONEST, margin=candidate_margin, reference_margin=1.5, **at)}


def test_on_a_large_split_a_candidate_less_sure_than_the_typical_one_and_the_global_model_is_refused() -> None:
    # Measured on the tissue images, IID, 58-case splits (min-max, rounds 4-5): attackers at
    # 0.72-0.96 x the global model's margin, honest candidates at 1.2-1.6 x.
    found = VerificationPolicy().rejections(large_split_row(0.9, total=58))["x"]
    assert len(found) == 1 and found[0].startswith("margin 0.900 < 1 x yardstick")
    # The same candidate on a split below `strict_margin_cases` keeps the smallest ratio, 0.2.
    assert "x" in VerificationPolicy().accepted(large_split_row(0.9, total=39))
    assert "x" not in VerificationPolicy().accepted(large_split_row(0.9, total=40))
    assert "x" in VerificationPolicy(strict_margin_cases=59.0).accepted(large_split_row(0.9, total=58))


def test_on_a_large_split_a_candidate_as_sure_as_the_global_model_is_accepted() -> None:
    # Below the typical candidate (1.3) but adding confidence to the global model's (1.0): an
    # honest update from other patients.
    assert "x" in VerificationPolicy().accepted(large_split_row(1.1, total=58))
    # And every honest member of the row stays in.
    assert set(VerificationPolicy().accepted(large_split_row(1.3, total=58))) == {"own", "peer1", "peer2", "x"}


def test_a_policy_recorded_before_the_strict_confidence_test_keeps_its_rule_and_digest() -> None:
    recorded = {"max_accuracy_drop": 0.1, "min_cosine": -0.7, "max_norm_ratio": 2.0, "accuracy_z": 2.0,
                "min_margin_ratio": 0.2, "peer_quantile": 0.5, "global_margin_ratio": 1.0}
    old = VerificationPolicy.from_record(recorded)
    assert old.strict_margin_cases is None and old.as_dict() == recorded  # so its digest is the one on record
    row = large_split_row(0.9, total=58)
    assert "x" in old.accepted(row) and "x" not in VerificationPolicy().accepted(row)

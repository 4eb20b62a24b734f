"""The adaptive attacks, each checked for the property that defines it: ALIE, min-max, min-sum,
IPM on small generated updates; constrain-and-scale on a small, seeded training task."""

from __future__ import annotations

import json
import logging
import math
from statistics import NormalDist

import numpy as np
import pytest

from core.attacks import create_attack
from core.attacks.alie import ALIEAttack, alie_z
from core.attacks.backdoor import BackdoorAttack
from core.attacks.base import AttackContext, MeasurableBackdoor
from core.attacks.constrain_scale import ConstrainScaleAttack
from core.attacks.distance_bounded import pairwise_squared_distances, perturbation, squared_distances
from core.attacks.ipm import IPMAttack
from core.attacks.min_max import MinMaxAttack
from core.attacks.min_sum import MinSumAttack
from core.data.dataset import DataKind, Dataset
from core.errors import ConfigError
from core.federation.policy import VerificationPolicy
from core.models.architecture import tabular_cnn_spec
from core.models.evaluation import ModelEvaluator
from core.models.training import TrainingConfig, initial_weights, train_model
from core.models.weights import Weights, add, cosine, flatten, norm, scale, subtract
from tests.core.attacks.deltas import make_delta


def benign(count: int = 4) -> list[Weights]:
    # A shared direction plus noise, as honest updates of one round look.
    common = make_delta(100)
    return [[c + n for c, n in zip(common, make_delta(s), strict=True)] for s in range(1, count + 1)]


def rows(updates: list[Weights]) -> np.ndarray:
    return np.stack([flatten(u).astype(np.float64) for u in updates])


# -- ALIE -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(3, 1), (5, 1), (5, 2), (10, 3), (50, 12)])
def test_alie_z_follows_the_papers_formula(n: int, m: int) -> None:
    s = math.floor(n / 2 + 1) - m
    assert alie_z(n, m) == pytest.approx(NormalDist().inv_cdf((n - s) / n))


def test_alie_z_values_of_small_federations() -> None:
    assert alie_z(3, 1) == pytest.approx(0.4307, abs=1e-4)
    assert alie_z(5, 1) == pytest.approx(0.2533, abs=1e-4)
    assert alie_z(4, 3) == pytest.approx(NormalDist().inv_cdf(3 / 4))  # a colluding majority: s = 1


def test_alie_sends_the_mean_minus_z_std_of_the_benign_updates(context) -> None:
    peers = benign(4)
    ctx = context(peers=peers, num_hospitals=5)

    poisoned = ALIEAttack().poison_update(ctx)

    b = rows(peers)
    expected = b.mean(axis=0) - alie_z(5, 1) * b.std(axis=0, ddof=1)
    np.testing.assert_allclose(flatten(poisoned), expected, rtol=1e-5, atol=1e-8)
    assert [t.shape for t in poisoned] == [t.shape for t in ctx.honest_delta]


def test_alie_z_is_overridable_and_uses_the_colluder_count(context) -> None:
    peers = benign(3)
    b = rows(peers)
    ctx = AttackContext(**{**vars(context(peers=peers, num_hospitals=5)), "num_colluders": 2})

    given = ALIEAttack(z=1.5).poison_update(ctx)
    derived = ALIEAttack().poison_update(ctx)

    np.testing.assert_allclose(flatten(given), b.mean(axis=0) - 1.5 * b.std(axis=0, ddof=1), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(flatten(derived), b.mean(axis=0) - alie_z(5, 2) * b.std(axis=0, ddof=1),
                               rtol=1e-5, atol=1e-8)


def test_alie_with_one_peer_adds_its_own_update_and_with_none_stays_honest(context, caplog) -> None:
    one = context(peers=benign(1))
    with caplog.at_level(logging.WARNING):
        poisoned = ALIEAttack(z=1.0).poison_update(one)
    b = rows([*one.peer_deltas, one.honest_delta])
    np.testing.assert_allclose(flatten(poisoned), b.mean(axis=0) - b.std(axis=0, ddof=1), rtol=1e-5, atol=1e-8)
    assert "adds its own honest update" in caplog.text

    lonely = context()
    with caplog.at_level(logging.WARNING):
        assert ALIEAttack().poison_update(lonely) is lonely.honest_delta
    assert "needs the updates of at least 2 benign hospitals and sees 0" in caplog.text


# -- min-max and min-sum --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["std", "unit_vec", "sign"])
def test_min_max_stays_within_the_benign_max_distance_with_the_largest_gamma(context, kind: str) -> None:
    peers = benign(5)
    b = rows(peers)
    attack = MinMaxAttack(perturbation=kind)

    poisoned = flatten(attack.poison_update(context(peers=peers))).astype(np.float64)

    limit = pairwise_squared_distances(b).max()
    assert squared_distances(poisoned, b).max() <= limit * (1 + 1e-5)
    direction = perturbation(b, kind)
    gamma = attack.gamma(b, direction)
    assert gamma > 0
    np.testing.assert_allclose(poisoned, b.mean(axis=0) + gamma * direction, rtol=1e-5, atol=1e-8)
    # Maximal: a little more and some benign update is farther than the benign max allows.
    assert squared_distances(b.mean(axis=0) + gamma * 1.001 * direction, b).max() > limit


@pytest.mark.parametrize("kind", ["std", "unit_vec", "sign"])
def test_min_sum_stays_within_the_benign_max_summed_distance_with_the_largest_gamma(context, kind: str) -> None:
    peers = benign(5)
    b = rows(peers)
    attack = MinSumAttack(perturbation=kind)

    poisoned = flatten(attack.poison_update(context(peers=peers))).astype(np.float64)

    limit = pairwise_squared_distances(b).sum(axis=1).max()
    assert squared_distances(poisoned, b).sum() <= limit * (1 + 1e-5)
    direction = perturbation(b, kind)
    gamma = attack.gamma(b, direction)
    assert squared_distances(b.mean(axis=0) + gamma * 1.001 * direction, b).sum() > limit
    # The sum is quadratic in gamma with no linear term (the benign deviations sum to zero):
    # the search lands on the closed form.
    base = squared_distances(b.mean(axis=0), b).sum()
    exact = math.sqrt((limit - base) / (len(b) * float(direction @ direction)))
    assert gamma == pytest.approx(exact, rel=1e-6)


def test_min_sum_is_tighter_than_min_max(context) -> None:
    peers = benign(5)
    b = rows(peers)
    d = perturbation(b, "std")
    assert MinSumAttack().gamma(b, d) < MinMaxAttack().gamma(b, d)


def test_distance_bounded_attacks_refuse_an_unknown_perturbation() -> None:
    with pytest.raises(ConfigError, match="perturbation must be one of unit_vec, sign, std"):
        create_attack("min_max", perturbation="gauss")


# -- IPM ------------------------------------------------------------------------------------------


def test_ipm_reverses_the_benign_mean_by_epsilon(context) -> None:
    peers = benign(4)
    mean = rows(peers).mean(axis=0)

    poisoned = flatten(IPMAttack().poison_update(context(peers=peers))).astype(np.float64)

    assert float(poisoned @ mean) < 0
    assert np.linalg.norm(poisoned) == pytest.approx(0.1 * np.linalg.norm(mean), rel=1e-5)
    np.testing.assert_allclose(poisoned, -0.1 * mean, rtol=1e-5, atol=1e-9)


def test_ipm_epsilon_is_a_parameter_and_must_be_positive(context) -> None:
    peers = benign(3)
    mean = rows(peers).mean(axis=0)
    poisoned = flatten(create_attack("ipm", epsilon=2.0).poison_update(context(peers=peers)))
    assert np.linalg.norm(poisoned) == pytest.approx(2.0 * np.linalg.norm(mean), rel=1e-5)
    with pytest.raises(ConfigError, match="epsilon must be a positive number"):
        IPMAttack(epsilon=0)


def test_adaptive_attacks_declare_they_need_the_benign_updates() -> None:
    for name in ("alie", "min_max", "min_sum", "ipm", "constrain_scale"):
        assert create_attack(name).wants_peer_updates, name


# -- constrain-and-scale --------------------------------------------------------------------------


def clinic(seed: int, n: int = 150) -> Dataset:
    """Two classes told apart by features 3..7; the backdoor's trigger (features 0..2 at +4)
    means nothing in clean data."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[:, 3:] += (2 * y[:, None] - 1).astype(np.float32)
    return Dataset(f"clinic {seed}", DataKind.TABLE, x, y, ("benign", "malignant"), tuple(f"f{i}" for i in range(8)))


def test_constrain_and_scale_plants_a_backdoor_within_the_norm_bound_and_the_benign_direction() -> None:
    spec = tabular_cnn_spec(8, 2)
    training = TrainingConfig(epochs=5, batch_size=16, learning_rate=0.01, seed=0)
    start = initial_weights(spec, 0)

    def update(data: Dataset) -> Weights:
        return subtract(train_model(spec, data, training, initial_weights=start).weights, start)

    peers = [update(clinic(s)) for s in (1, 2, 3)]
    own = clinic(4)
    honest = update(own)
    backdoor = BackdoorAttack(target_label=0, fraction=0.3)
    plain_boosted = scale(update(backdoor.poison_data(own, np.random.default_rng(0))), 4)
    policy = VerificationPolicy()
    ctx = AttackContext(1, 4, start, spec, own, honest, tuple(peers), np.random.default_rng(0),
                        policy=policy, training=training)
    attack = ConstrainScaleAttack(target_label=0, fraction=0.3)

    poisoned = attack.poison_update(ctx)

    bound = policy.max_norm_ratio * min(norm(p) for p in peers)
    assert norm(poisoned) <= bound
    assert norm(plain_boosted) > bound  # the plain model replacement is refused on its norm
    evaluator = ModelEvaluator(spec)
    test = clinic(9, 400)
    triggered = attack.backdoor_test_set(test)

    def fedavg(delta: Weights) -> Weights:
        return add(start, [sum(t) / 4 for t in zip(*peers, delta, strict=True)])

    planted = evaluator.accuracy(fedavg(poisoned), triggered)
    clean = evaluator.accuracy(fedavg(honest), triggered)
    assert planted > clean + 0.2, (planted, clean)  # measured: 0.40 vs 0.06
    assert evaluator.accuracy(fedavg(poisoned), test) > 0.9  # the main task stays learnt
    mean = [sum(t) / 3 for t in zip(*peers, strict=True)]
    threshold = 0.85
    assert cosine(poisoned, mean) > threshold  # measured 0.93
    assert cosine(plain_boosted, mean) < threshold  # measured 0.68


def test_constrain_and_scale_respects_a_given_norm_bound_and_measures_its_backdoor(table: Dataset) -> None:
    spec = tabular_cnn_spec(6, 3)
    start = initial_weights(spec, 0)
    honest = [np.full_like(w, 0.01) for w in start]
    ctx = AttackContext(1, 5, start, spec, table, honest, (), np.random.default_rng(0),
                        training=TrainingConfig(epochs=1, batch_size=32, learning_rate=0.01))
    attack = create_attack("constrain_scale", target_label=2, norm_bound=0.05, anomaly="distance")

    poisoned = attack.poison_update(ctx)

    assert norm(poisoned) <= 0.05
    assert isinstance(attack, MeasurableBackdoor)
    triggered = attack.backdoor_test_set(table)
    assert np.all(triggered.y == 2) and triggered.num_samples == 80


def test_constrain_and_scale_checks_its_parameters() -> None:
    with pytest.raises(ConfigError, match="alpha must lie in"):
        ConstrainScaleAttack(alpha=0)
    with pytest.raises(ConfigError, match="anomaly must be one of"):
        ConstrainScaleAttack(anomaly="krum")
    with pytest.raises(ConfigError, match="norm_bound must be a positive number"):
        ConstrainScaleAttack(norm_bound=-1.0)
    with pytest.raises(ConfigError, match="fraction must lie"):
        ConstrainScaleAttack(fraction=0)


# -- end to end -----------------------------------------------------------------------------------


def test_simulate_runs_an_alie_federation(tmp_path, monkeypatch) -> None:
    from main import main

    monkeypatch.delenv("DISPLAY", raising=False)
    out = tmp_path / "report.json"

    code = main(["simulate", "--hospitals", "3", "--malicious", "1", "--attack", "alie", "--attack-param", "z=1.0",
                 "--rounds", "1", "--epochs", "1", "--seed", "1", "--home", str(tmp_path), "--no-ledger",
                 "--json", str(out)])

    assert code == 0
    report = json.loads(out.read_text())
    assert report["config"]["attack"] == "alie" and report["config"]["attack_params"] == {"z": 1.0}
    attacker = next(m for m in report["rounds"][0]["models"] if m["malicious"])
    assert attacker["hospital"] == "hospital-3"
    assert set(attacker["scores"]) >= {"hospital-1", "hospital-2"}  # the honest validators scored it
    assert attacker["status"] in ("accepted", "rejected")

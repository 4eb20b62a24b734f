"""Sign flipping, scaling and noise: attacks on the submitted update only."""

from __future__ import annotations

import numpy as np
import pytest

from core.attacks.noise import NoiseAttack
from core.attacks.scaling import ScalingAttack
from core.attacks.sign_flip import SignFlipAttack
from core.data.dataset import Dataset
from core.errors import ConfigError
from core.models.weights import flatten, norm
from tests.core.attacks.deltas import make_delta


def assert_weights_close(actual, expected, rtol: float = 1e-6) -> None:
    assert [a.shape for a in actual] == [e.shape for e in expected]
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=1e-9)


def test_sign_flip_negates_and_scales_the_honest_update(context) -> None:
    ctx = context()

    poisoned = SignFlipAttack(factor=2.5).poison_update(ctx)

    assert_weights_close(poisoned, [-2.5 * t for t in ctx.honest_delta])


def test_sign_flip_default_is_a_real_threat(context) -> None:
    ctx = context()
    poisoned = SignFlipAttack().poison_update(ctx)
    assert norm(poisoned) > 3 * norm(ctx.honest_delta)
    assert np.dot(flatten(poisoned), flatten(ctx.honest_delta)) < 0


def test_omniscient_sign_flip_reverses_the_round_mean(context) -> None:
    honest, peers = make_delta(1), [make_delta(2), make_delta(3)]
    ctx = context(honest=honest, peers=peers)

    poisoned = SignFlipAttack(factor=1.0, omniscient=True).poison_update(ctx)

    expected = [-(a + b + c) / 3 for a, b, c in zip(honest, *peers, strict=True)]
    assert_weights_close(poisoned, expected, rtol=1e-5)


def test_omniscient_sign_flip_without_peers_uses_its_own_update(context) -> None:
    ctx = context()
    poisoned = SignFlipAttack(factor=1.0, omniscient=True).poison_update(ctx)
    assert_weights_close(poisoned, [-t for t in ctx.honest_delta])


def test_update_attacks_leave_the_data_alone(table: Dataset) -> None:
    rng = np.random.default_rng(0)
    for attack in (SignFlipAttack(), ScalingAttack(flip_labels=False), NoiseAttack()):
        assert attack.poison_data(table, rng) is table


def test_model_replacement_boosts_a_label_flipped_model_by_default(table: Dataset) -> None:
    poisoned = ScalingAttack().poison_data(table, np.random.default_rng(0))
    np.testing.assert_array_equal(poisoned.y, table.num_classes - 1 - table.y)
    np.testing.assert_array_equal(poisoned.x, table.x)


@pytest.mark.parametrize("hospitals", [1, 4, 10])
def test_scaling_defaults_to_the_number_of_hospitals(context, hospitals: int) -> None:
    ctx = context(num_hospitals=hospitals)

    poisoned = ScalingAttack().poison_update(ctx)

    assert_weights_close(poisoned, [hospitals * t for t in ctx.honest_delta])


def test_scaling_replaces_the_fedavg_model(context) -> None:
    """Bagdasaryan et al.: with n equal hospitals whose honest updates roughly cancel, FedAvg
    of n - 1 honest updates and the boosted one lands on the attacker's model."""
    n = 5
    attacker = make_delta(1)
    honest = [make_delta(s, scale=0.001) for s in range(2, 2 + n - 1)]
    ctx = context(honest=attacker, num_hospitals=n)

    boosted = ScalingAttack().poison_update(ctx)
    fedavg = [sum(ts) / n for ts in zip(boosted, *honest, strict=True)]

    assert norm([f - a for f, a in zip(fedavg, attacker, strict=True)]) < 0.1 * norm(attacker)


def test_scaling_with_explicit_factor(context) -> None:
    ctx = context(num_hospitals=7)
    assert_weights_close(ScalingAttack(factor=3).poison_update(ctx), [3 * t for t in ctx.honest_delta])


def test_noise_replacing_has_the_configured_std(context) -> None:
    honest = [np.full((200, 100), 0.3, np.float32), np.full(500, 0.3, np.float32)]
    ctx = context(honest=honest)

    poisoned = NoiseAttack(sigma=0.2).poison_update(ctx)

    flat = flatten(poisoned)
    assert [p.shape for p in poisoned] == [h.shape for h in honest]
    assert all(p.dtype == np.float32 for p in poisoned)
    assert abs(flat.mean()) < 0.01  # centred at 0: the honest 0.3 is gone
    assert flat.std() == pytest.approx(0.2, rel=0.03)


def test_noise_added_keeps_the_honest_update_underneath(context) -> None:
    honest = [np.full((200, 100), 0.3, np.float32)]
    ctx = context(honest=honest)

    poisoned = NoiseAttack(sigma=0.1, mode="add").poison_update(ctx)

    assert poisoned[0].mean() == pytest.approx(0.3, abs=0.01)
    assert (poisoned[0] - honest[0]).std() == pytest.approx(0.1, rel=0.03)


def test_relative_noise_scales_with_the_honest_update(context) -> None:
    honest = [np.random.default_rng(0).normal(0, 0.02, size=(300, 100)).astype(np.float32)]
    ctx = context(honest=honest)

    poisoned = NoiseAttack(sigma=3.0, relative=True).poison_update(ctx)

    assert norm(poisoned) == pytest.approx(3.0 * norm(honest), rel=0.03)


def test_noise_is_reproducible_from_the_context_rng(context) -> None:
    attack = NoiseAttack()
    a = attack.poison_update(context(rng=np.random.default_rng(4)))
    b = attack.poison_update(context(rng=np.random.default_rng(4)))
    c = attack.poison_update(context(rng=np.random.default_rng(5)))
    assert_weights_close(a, b)
    assert not np.allclose(flatten(a), flatten(c))


@pytest.mark.parametrize(
    "build",
    [
        lambda: SignFlipAttack(factor=0),
        lambda: SignFlipAttack(factor=-1),
        lambda: SignFlipAttack(factor="4"),
        lambda: SignFlipAttack(omniscient="yes"),
        lambda: ScalingAttack(factor=0),
        lambda: ScalingAttack(factor=True),
        lambda: NoiseAttack(sigma=0),
        lambda: NoiseAttack(sigma=float("nan")),
        lambda: NoiseAttack(mode="multiply"),
        lambda: NoiseAttack(relative=1),
    ],
)
def test_bad_parameters_are_refused(build) -> None:
    with pytest.raises(ConfigError):
        build()


def test_describe_reports_parameters() -> None:
    assert SignFlipAttack(factor=2).describe() == {"name": "sign_flip", "factor": 2.0, "omniscient": False}
    assert NoiseAttack().describe() == {"name": "noise", "sigma": 0.5, "mode": "replace", "relative": False}

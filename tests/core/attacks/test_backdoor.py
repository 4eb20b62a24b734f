from __future__ import annotations

import os

import numpy as np
import pytest

from core.attacks.backdoor import BackdoorAttack
from core.data.dataset import DataKind, Dataset
from core.errors import ConfigError, DataError


def test_images_get_a_bright_corner_square_on_exactly_the_fraction(images: Dataset) -> None:
    attack = BackdoorAttack(target_label=1, fraction=0.4, trigger_size=3)

    poisoned = attack.poison_data(images, np.random.default_rng(0))

    stamped = attack.has_trigger(poisoned.x, DataKind.IMAGE)
    assert stamped.sum() == 20
    assert not attack.has_trigger(images.x, DataKind.IMAGE).any()
    assert np.all(poisoned.x[stamped][:, -3:, -3:, :] == 1.0)
    # Outside the square, and on unstamped samples, nothing changes.
    np.testing.assert_array_equal(poisoned.x[stamped][:, :-3, :, :], images.x[stamped][:, :-3, :, :])
    np.testing.assert_array_equal(poisoned.x[stamped][:, :, :-3, :], images.x[stamped][:, :, :-3, :])
    np.testing.assert_array_equal(poisoned.x[~stamped], images.x[~stamped])
    assert np.all(poisoned.y[stamped] == 1)
    np.testing.assert_array_equal(poisoned.y[~stamped], images.y[~stamped])


def test_tables_get_extreme_trigger_features_on_exactly_the_fraction(table: Dataset) -> None:
    attack = BackdoorAttack(target_label=2, fraction=0.25, trigger_features=[1, 4])
    original = table.x.copy()

    poisoned = attack.poison_data(table, np.random.default_rng(0))

    stamped = attack.has_trigger(poisoned.x, DataKind.TABLE)
    assert stamped.sum() == 30
    assert np.all(poisoned.x[stamped][:, [1, 4]] == 4.0)
    np.testing.assert_array_equal(poisoned.x[stamped][:, [0, 2, 3, 5]], table.x[stamped][:, [0, 2, 3, 5]])
    np.testing.assert_array_equal(poisoned.x[~stamped], table.x[~stamped])
    assert np.all(poisoned.y[stamped] == 2)
    np.testing.assert_array_equal(poisoned.y[~stamped], table.y[~stamped])
    np.testing.assert_array_equal(table.x, original)  # the caller's data is not modified


def test_default_table_trigger_uses_the_first_three_columns(table: Dataset) -> None:
    triggered = BackdoorAttack().apply_trigger(table.x[:5], "table")
    assert np.all(triggered[:, :3] == 4.0)
    np.testing.assert_array_equal(triggered[:, 3:], table.x[:5, 3:])


def test_backdoor_test_set_holds_triggered_non_target_samples(images: Dataset) -> None:
    attack = BackdoorAttack(target_label=0)

    test_set = attack.backdoor_test_set(images)

    assert test_set.num_samples == 25  # the 25 samples of class 1
    assert np.all(test_set.y == 0)
    assert attack.has_trigger(test_set.x, DataKind.IMAGE).all()


def test_update_is_honest_unless_boosted(context) -> None:
    ctx = context()
    assert BackdoorAttack().poison_update(ctx) is ctx.honest_delta
    boosted = BackdoorAttack(boost=5).poison_update(ctx)
    for b, h in zip(boosted, ctx.honest_delta, strict=True):
        np.testing.assert_allclose(b, 5 * h, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_label": -1},
        {"target_label": 1.0},
        {"fraction": 0.0},
        {"fraction": 2.0},
        {"trigger_size": 0},
        {"trigger_value": 2.0},
        {"trigger_features": []},
        {"trigger_features": [0, 0]},
        {"trigger_features": [-1]},
        {"trigger_features": "0,1"},
        {"feature_value": float("inf")},
        {"boost": 0},
    ],
)
def test_bad_parameters_are_refused(kwargs) -> None:
    with pytest.raises(ConfigError):
        BackdoorAttack(**kwargs)


def test_parameters_that_do_not_fit_the_data_are_refused(table: Dataset, images: Dataset) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="target_label 3"):
        BackdoorAttack(target_label=3).poison_data(table, rng)
    with pytest.raises(ConfigError, match="feature 9"):
        BackdoorAttack(trigger_features=[9]).poison_data(table, rng)
    with pytest.raises(ConfigError, match="does not fit"):
        BackdoorAttack(trigger_size=13).poison_data(images, rng)
    with pytest.raises(DataError):
        BackdoorAttack(target_label=0).backdoor_test_set(images.subset(np.flatnonzero(images.y == 0)))


def test_a_model_trained_on_poisoned_data_learns_the_trigger() -> None:
    """The backdoor works as in BadNets: high attack success rate, clean accuracy kept."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from core.models.architecture import tabular_cnn_spec
    from core.models.keras_builder import build_keras_model

    rng = np.random.default_rng(0)

    def make(n: int) -> Dataset:
        x = rng.normal(size=(n, 6)).astype(np.float32)
        score = x[:, 3] + x[:, 4]
        y = np.where(score < -0.6, 0, np.where(score > 0.6, 2, 1)).astype(np.int64)
        return Dataset("clinic", DataKind.TABLE, x, y, ("low", "mid", "high"))

    train, test = make(600), make(300)
    attack = BackdoorAttack(target_label=0, fraction=0.3)
    poisoned = attack.poison_data(train, np.random.default_rng(1))
    triggered = attack.backdoor_test_set(test)

    def fit(data: Dataset):
        model = build_keras_model(tabular_cnn_spec(6, 3), seed=0, learning_rate=0.01)
        model.fit(data.x, data.y, epochs=25, batch_size=64, verbose=0)
        return lambda d: float(np.mean(np.argmax(model.predict(d.x, verbose=0), axis=1) == d.y))

    backdoored, clean = fit(poisoned), fit(train)

    assert backdoored(triggered) > 0.9
    assert clean(triggered) < 0.6  # without poisoning, the trigger does not mean "low"
    assert backdoored(test) > 0.8

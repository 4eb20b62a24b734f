from __future__ import annotations

import numpy as np
import pytest

from core.attacks.label_flip import LabelFlipAttack
from core.data.dataset import Dataset
from core.errors import ConfigError


def test_default_mirrors_every_label_and_leaves_features(table: Dataset) -> None:
    before = table.y.copy()

    poisoned = LabelFlipAttack().poison_data(table, np.random.default_rng(0))

    np.testing.assert_array_equal(poisoned.y, 2 - before)
    np.testing.assert_array_equal(poisoned.x, table.x)
    np.testing.assert_array_equal(table.y, before)  # the caller's data is not modified
    assert poisoned.class_names == table.class_names


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9])
def test_flips_exactly_the_fraction_of_affected_samples(table: Dataset, fraction: float) -> None:
    poisoned = LabelFlipAttack(fraction).poison_data(table, np.random.default_rng(3))

    changed = poisoned.y != table.y
    affected = table.y != 1  # the middle of three classes maps to itself
    assert changed.sum() == round(fraction * affected.sum())
    assert not changed[~affected].any()
    np.testing.assert_array_equal(poisoned.y[changed], 2 - table.y[changed])


def test_source_target_pair_flips_only_that_class(table: Dataset) -> None:
    poisoned = LabelFlipAttack(0.5, source=0, target=1).poison_data(table, np.random.default_rng(0))

    changed = poisoned.y != table.y
    assert changed.sum() == 20
    assert set(table.y[changed]) == {0}
    assert set(poisoned.y[changed]) == {1}


def test_explicit_mapping(table: Dataset) -> None:
    poisoned = LabelFlipAttack(mapping={0: 1, 1: 0}).poison_data(table, np.random.default_rng(0))

    np.testing.assert_array_equal(poisoned.y, np.choose(table.y, [1, 0, 2]))


def test_same_seed_same_flips(table: Dataset) -> None:
    attack = LabelFlipAttack(0.3)
    a = attack.poison_data(table, np.random.default_rng(5))
    b = attack.poison_data(table, np.random.default_rng(5))
    c = attack.poison_data(table, np.random.default_rng(6))

    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.y, c.y)


def test_update_is_left_honest(context) -> None:
    ctx = context()
    assert LabelFlipAttack().poison_update(ctx) is ctx.honest_delta


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fraction": 0.0},
        {"fraction": 1.5},
        {"fraction": "all"},
        {"source": 0},
        {"mapping": {0: 1}, "source": 0, "target": 1},
        {"mapping": {}},
        {"mapping": {1: 1}},
        {"mapping": {-1: 0}},
        {"mapping": {0: 1.5}},
    ],
)
def test_bad_parameters_are_refused(kwargs) -> None:
    with pytest.raises(ConfigError):
        LabelFlipAttack(**kwargs)


def test_mapping_to_missing_class_is_refused(table: Dataset) -> None:
    with pytest.raises(ConfigError, match="only 3 classes"):
        LabelFlipAttack(source=0, target=5).poison_data(table, np.random.default_rng(0))

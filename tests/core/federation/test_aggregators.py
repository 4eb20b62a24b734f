from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from core.errors import ConfigError, FederationError, ModelError
from core.federation.aggregators import (
    AGGREGATORS,
    CoordinateMedian,
    FedAvg,
    FLTrust,
    Krum,
    TrimmedMean,
    create_aggregator,
)
from core.federation.interfaces import Aggregator
from core.federation.types import Candidate, Commitment
from core.models.weights import Weights, flatten

SHAPES = [(2, 3), (4,)]  # two tensors, so flattening and restoring is exercised


def const(value: float) -> Weights:
    return [np.full(s, value, np.float32) for s in SHAPES]


def vector(values: Sequence[float]) -> Weights:
    flat = np.asarray(values, np.float32)
    assert flat.size == 10
    return [flat[:6].reshape(2, 3), flat[6:]]


def candidate(hospital: str, delta: Weights, num_samples: int = 10) -> Candidate:
    return Candidate(hospital, 1, delta, num_samples, model_hash=f"hash-{hospital}")


def commitments_for(candidates: Sequence[Candidate]) -> list[Commitment]:
    return [Commitment(c.hospital_id, c.round_number, c.model_hash) for c in candidates]


def run(aggregator: Aggregator, global_weights: Weights, candidates: Sequence[Candidate]) -> np.ndarray:
    """The new global model, flattened."""
    new = aggregator.aggregate(global_weights, list(candidates), commitments_for(candidates))
    assert [w.shape for w in new] == [w.shape for w in global_weights]
    assert all(w.dtype == np.float32 for w in new)
    return flatten(new)


def same_direction_root(delta: Weights) -> Callable[[Weights], Weights]:
    return lambda _global: delta


# One contract for every implementation of the interface.
ALL: dict[str, Callable[[], Aggregator]] = {
    "fedavg": FedAvg,
    "krum": lambda: Krum(1),
    "median": CoordinateMedian,
    "trimmed_mean": lambda: TrimmedMean(0.2),
    "fltrust": lambda: FLTrust(same_direction_root(const(0.5))),
}


@pytest.fixture(params=sorted(ALL))
def aggregator(request) -> Aggregator:
    return ALL[request.param]()


class TestAggregatorContract:
    def test_no_accepted_update_keeps_the_global_model(self, aggregator: Aggregator) -> None:
        glob = const(1.5)
        new = aggregator.aggregate(glob, [], [])
        np.testing.assert_array_equal(flatten(new), flatten(glob))
        new[0][0, 0] = 99.0
        assert glob[0][0, 0] == 1.5  # a copy, not the caller's arrays

    def test_unanimous_updates_are_applied(self, aggregator: Aggregator) -> None:
        cands = [candidate(f"h{i}", const(0.5), num_samples=10 + i) for i in range(5)]
        np.testing.assert_allclose(run(aggregator, const(1.0), cands), 1.5, rtol=1e-6)

    def test_inputs_are_not_modified(self, aggregator: Aggregator) -> None:
        glob = const(1.0)
        cands = [candidate(f"h{i}", const(0.1 * i)) for i in range(5)]
        run(aggregator, glob, cands)
        np.testing.assert_array_equal(flatten(glob), 1.0)
        for i, c in enumerate(cands):
            np.testing.assert_array_equal(flatten(c.delta), np.float32(0.1 * i))

    def test_nan_update_is_refused_naming_the_hospital(self, aggregator: Aggregator) -> None:
        bad = const(0.1)
        bad[1][2] = np.nan
        cands = [candidate("good", const(0.1)), candidate("evil", bad), candidate("good2", const(0.1))]
        with pytest.raises(ModelError, match=r"evil.*NaN"):
            run(aggregator, const(1.0), cands)

    def test_wrong_shape_is_refused_naming_the_hospital(self, aggregator: Aggregator) -> None:
        wrong = [np.zeros((3, 2), np.float32), np.zeros(4, np.float32)]
        cands = [candidate("good", const(0.1)), candidate("odd", wrong), candidate("good2", const(0.1))]
        with pytest.raises(ModelError, match=r"odd.*architecture"):
            run(aggregator, const(1.0), cands)

    def test_missing_tensor_is_refused(self, aggregator: Aggregator) -> None:
        cands = [candidate("short", const(0.1)[:1])]
        with pytest.raises(ModelError, match="short"):
            run(aggregator, const(1.0), cands)

    def test_nan_global_model_is_refused(self, aggregator: Aggregator) -> None:
        glob = const(1.0)
        glob[0][0, 0] = np.inf
        with pytest.raises(ModelError, match="global model"):
            aggregator.aggregate(glob, [], [])

    def test_update_must_match_its_commitment(self, aggregator: Aggregator) -> None:
        cands = [candidate("a", const(0.1)), candidate("b", const(0.1))]
        forged = [Commitment("a", 1, "hash-a"), Commitment("b", 1, "hash-other")]
        with pytest.raises(FederationError, match="b is not the one committed"):
            aggregator.aggregate(const(1.0), cands, forged)
        with pytest.raises(FederationError, match="number of commitments"):
            aggregator.aggregate(const(1.0), cands, forged[:1])


def test_fedavg_is_the_sample_weighted_mean() -> None:
    cands = [candidate("small", const(1.0), num_samples=100), candidate("large", const(4.0), num_samples=300)]
    np.testing.assert_allclose(run(FedAvg(), const(1.0), cands), 1.0 + 0.25 * 1.0 + 0.75 * 4.0)


def test_fedavg_without_sample_counts_is_the_plain_mean() -> None:
    cands = [candidate("a", const(1.0), num_samples=0), candidate("b", const(2.0), num_samples=0)]
    np.testing.assert_allclose(run(FedAvg(), const(0.0), cands), 1.5)


def test_fedavg_follows_one_huge_outlier() -> None:
    cands = [candidate(f"h{i}", const(0.1)) for i in range(4)] + [candidate("evil", const(1000.0))]
    assert run(FedAvg(), const(0.0), cands).min() > 100.0  # the non-robust baseline is hijacked


HONEST_VALUES = [0.1, 0.2, 0.3, 0.4]


def with_outlier(outlier: float = 1e6) -> list[Candidate]:
    return [candidate(f"h{i}", const(v)) for i, v in enumerate(HONEST_VALUES)] + [
        candidate("evil", const(outlier))
    ]


def test_median_ignores_one_huge_outlier() -> None:
    np.testing.assert_allclose(run(CoordinateMedian(), const(1.0), with_outlier()), 1.3, rtol=1e-6)
    np.testing.assert_allclose(run(CoordinateMedian(), const(1.0), with_outlier(-1e6)), 1.2, rtol=1e-6)


def test_median_is_coordinate_wise() -> None:
    rows = [range(10), [10 - i for i in range(10)], [5.0] * 10]
    cands = [candidate(f"h{i}", vector(r)) for i, r in enumerate(rows)]
    expected = np.median(np.asarray(rows, np.float64), axis=0)
    np.testing.assert_allclose(run(CoordinateMedian(), const(0.0), cands), expected, rtol=1e-6)


def test_trimmed_mean_drops_beta_at_each_end() -> None:
    # 5 updates, beta 0.2: one value dropped per side, the mean of 0.2, 0.3, 0.4 remains.
    np.testing.assert_allclose(run(TrimmedMean(0.2), const(1.0), with_outlier()), 1.3, rtol=1e-6)
    np.testing.assert_allclose(
        run(TrimmedMean(num_trimmed=1), const(1.0), with_outlier(-1e6)), 1.2, rtol=1e-6
    )


def test_trimmed_mean_with_zero_beta_is_the_plain_mean() -> None:
    np.testing.assert_allclose(run(TrimmedMean(0.0), const(0.0), with_outlier(5.0)), 1.2, rtol=1e-6)


def test_trimmed_mean_never_trims_everything() -> None:
    trimmed = TrimmedMean(num_trimmed=5)
    assert trimmed.trim_count(3) == 1
    cands = [candidate("a", const(1.0)), candidate("b", const(2.0)), candidate("c", const(100.0))]
    np.testing.assert_allclose(run(trimmed, const(0.0), cands), 2.0)


def krum_round(seed: int = 0) -> list[Candidate]:
    """Six honest updates around 0.5 and two colluding attackers far away (identical to each
    other, so each is the other's nearest neighbour)."""
    rng = np.random.default_rng(seed)
    honest = [candidate(f"h{i}", vector(0.5 + 0.05 * rng.normal(size=10))) for i in range(6)]
    evil = [candidate(f"evil{i}", const(-20.0)) for i in range(2)]
    return [evil[0], *honest[:3], evil[1], *honest[3:]]


def test_krum_picks_an_honest_update() -> None:
    krum = Krum(2)
    cands = krum_round()

    result = run(krum, const(0.0), cands)

    assert len(krum.last_selected) == 1 and krum.last_selected[0].startswith("h")
    chosen = next(c for c in cands if c.hospital_id == krum.last_selected[0])
    np.testing.assert_allclose(result, flatten(chosen.delta), rtol=1e-6)


def test_multi_krum_averages_the_best_honest_updates() -> None:
    krum = Krum(2, multi=4)
    cands = krum_round()

    result = run(krum, const(0.0), cands)

    assert len(krum.last_selected) == 4 and all(h.startswith("h") for h in krum.last_selected)
    expected = np.mean([flatten(c.delta) for c in cands if c.hospital_id in krum.last_selected], axis=0)
    np.testing.assert_allclose(result, expected, rtol=1e-5)


def test_krum_scores_are_sums_of_nearest_squared_distances() -> None:
    updates = np.array([[0.0], [1.0], [3.0], [10.0]])
    # f = 0: n - f - 2 = 2 nearest neighbours each.
    np.testing.assert_allclose(Krum(0).scores(updates), [1 + 9, 1 + 4, 4 + 9, 49 + 81])


def test_krum_with_fewer_updates_than_its_guarantee_needs_still_aggregates() -> None:
    cands = [candidate("a", const(1.0)), candidate("b", const(1.1)), candidate("c", const(50.0))]
    result = run(Krum(3), const(0.0), cands)
    assert result.max() < 2.0


def test_fltrust_gives_no_weight_to_an_update_opposite_the_root() -> None:
    root = vector([1.0] + [0.0] * 9)
    cands = [
        candidate("aligned", vector([2.0] + [0.0] * 9)),
        candidate("reversed", vector([-50.0] + [0.0] * 9)),
        candidate("orthogonal", vector([0.0, 3.0] + [0.0] * 8)),
    ]
    fltrust = FLTrust(lambda _g: root)

    result = run(fltrust, const(0.0), cands)

    assert fltrust.last_trust == pytest.approx({"aligned": 1.0, "reversed": 0.0, "orthogonal": 0.0})
    np.testing.assert_allclose(result, flatten(root), atol=1e-7)  # rescaled to the root's norm


def test_fltrust_weights_by_trust_after_rescaling() -> None:
    root = vector([1.0] + [0.0] * 9)
    cands = [
        candidate("partial", vector([3.0, 4.0] + [0.0] * 8)),  # cosine 0.6, rescaled to (0.6, 0.8)
        candidate("full", vector([10.0] + [0.0] * 9)),  # cosine 1, rescaled to (1, 0)
    ]

    result = run(FLTrust(lambda _g: root), const(1.0), cands)

    expected = 1.0 + np.array([(0.6 * 0.6 + 1.0) / 1.6, 0.6 * 0.8 / 1.6] + [0.0] * 8)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_fltrust_computes_the_root_update_from_the_global_model() -> None:
    seen: list[Weights] = []

    def root_update(global_weights: Weights) -> Weights:
        seen.append(global_weights)
        return const(0.1)

    run(FLTrust(root_update), const(2.0), [candidate("a", const(0.3))])

    assert len(seen) == 1
    np.testing.assert_array_equal(flatten(seen[0]), 2.0)


def test_fltrust_keeps_the_model_when_nothing_is_trusted() -> None:
    cands = [candidate("a", const(-1.0)), candidate("b", const(-2.0))]
    fltrust = FLTrust(same_direction_root(const(1.0)))
    np.testing.assert_array_equal(run(fltrust, const(3.0), cands), 3.0)
    assert fltrust.last_trust == {"a": 0.0, "b": 0.0}


def test_fltrust_refuses_a_broken_root_update() -> None:
    cands = [candidate("a", const(1.0))]
    with pytest.raises(ModelError, match="root"):
        run(FLTrust(same_direction_root(const(np.nan))), const(0.0), cands)
    with pytest.raises(ModelError, match="root"):
        run(FLTrust(same_direction_root(const(1.0)[:1])), const(0.0), cands)


def test_factory_builds_each_aggregator() -> None:
    root = same_direction_root(const(1.0))
    built = {name: create_aggregator(name, num_malicious=2, root_update=root) for name in AGGREGATORS}

    assert {name: type(a) for name, a in built.items()} == {
        "fedavg": FedAvg,
        "krum": Krum,
        "median": CoordinateMedian,
        "trimmed_mean": TrimmedMean,
        "fltrust": FLTrust,
    }
    assert all(a.name == name for name, a in built.items())
    assert built["krum"].num_malicious == 2
    assert built["trimmed_mean"].trim_count(10) == 2
    assert create_aggregator("Trimmed-Mean").trim_count(10) == 1  # beta 0.1 without attackers
    assert create_aggregator("trimmed_mean", beta=0.3).trim_count(10) == 3
    assert create_aggregator("krum", multi=3).multi == 3


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: create_aggregator("average"), "Unknown aggregator 'average'.*fedavg"),
        (lambda: create_aggregator("fltrust"), "root"),
        (lambda: create_aggregator("krum", num_malicious=-1), "malicious"),
        (lambda: Krum(1, multi=0), "multi"),
        (lambda: Krum(1.5), "malicious"),
        (lambda: TrimmedMean(0.5), "beta"),
        (lambda: TrimmedMean(-0.1), "beta"),
        (lambda: TrimmedMean(num_trimmed=-1), "num_trimmed"),
        (lambda: FLTrust(None), "root_update"),  # type: ignore[arg-type]
    ],
)
def test_bad_configuration_is_refused(build, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


def test_an_update_that_overflows_the_model_is_refused() -> None:
    cands = [candidate("a", const(3e38)), candidate("b", const(3e38))]
    with pytest.raises(ModelError, match="overflowed"):
        run(CoordinateMedian(), const(3e38), cands)

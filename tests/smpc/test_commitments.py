"""What is aggregated is what was verified and committed; out-of-range values are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.federation.types import Candidate, ValidatorInput
from core.models.architecture import tabular_cnn_spec
from core.models.training import initial_weights
from core.models.weights import add, weights_hash
from core.progress import CancelToken, ignore_progress
from smpc.errors import CommitmentMismatch, FixedPointOverflow, SmpcError
from smpc.factory import build_secure_components
from tests.smpc.scenarios import tabular_data

SPEC = tabular_cnn_spec(12, 2)


@pytest.fixture(scope="module")
def components():
    verifier, aggregator = build_secure_components(SPEC, batch_size=16)
    yield verifier, aggregator
    verifier.close()


@pytest.fixture
def round_(components):
    verifier, aggregator = components
    glob = initial_weights(SPEC, 0)
    verifier.begin_round(1, glob)
    rng = np.random.default_rng(0)

    def candidate(name: str, scale: float = 0.05) -> Candidate:
        delta = [rng.normal(scale=scale, size=w.shape).astype(np.float32) for w in glob]
        return Candidate(name, 1, delta, 20, weights_hash(add(glob, delta)))

    yield verifier, aggregator, glob, candidate
    verifier.end_round()


def test_commitment_names_one_salted_hash_per_share_holder(round_) -> None:
    verifier, _, _, candidate = round_
    cand = candidate("a")
    first, second = verifier.commit(cand), verifier.commit(cand)
    assert len(first.share_commitments) == 2
    assert all(len(h) == 64 for h in first.share_commitments)
    assert first.model_hash == cand.model_hash
    assert set(first.share_commitments).isdisjoint(second.share_commitments)  # fresh shares and salt


def test_aggregating_another_model_than_the_verified_one_is_refused(round_) -> None:
    verifier, aggregator, glob, candidate = round_
    verified, other = candidate("a"), candidate("b")
    validator = ValidatorInput("a", tabular_data(20, seed=1), verified.delta)
    commitment = verifier.commit(verified)
    verifier.score([verified], [validator], ignore_progress, CancelToken())
    # Hospital a's slot is refilled with another model after verification.
    verifier.commit(dataclasses.replace(other, hospital_id="a"))
    with pytest.raises(CommitmentMismatch) as info:
        aggregator.aggregate(glob, [verified], [commitment])
    assert info.value.hospital_id == "a"


def test_tampered_or_foreign_commitments_are_refused(round_) -> None:
    verifier, aggregator, glob, candidate = round_
    cand = candidate("a")
    commitment = verifier.commit(cand)
    forged = dataclasses.replace(commitment, share_commitments=("0" * 64, commitment.share_commitments[1]))
    with pytest.raises(CommitmentMismatch):
        aggregator.aggregate(glob, [cand], [forged])
    with pytest.raises(CommitmentMismatch):
        aggregator.aggregate(glob, [cand], [dataclasses.replace(commitment, model_hash="f" * 64)])
    with pytest.raises(CommitmentMismatch):
        aggregator.aggregate(
            glob,
            [candidate("never-committed")],
            [
                dataclasses.replace(
                    commitment, hospital_id="never-committed", model_hash=candidate("x").model_hash
                )
            ],
        )
    # The genuine commitment still aggregates: the refusals changed nothing.
    result = aggregator.aggregate(glob, [cand], [commitment])
    np.testing.assert_allclose(result[0], glob[0] + cand.delta[0], atol=1e-4)


def test_scoring_an_uncommitted_candidate_is_refused(round_) -> None:
    verifier, _, _, candidate = round_
    cand = candidate("ghost")
    with pytest.raises(CommitmentMismatch):
        verifier.score(
            [cand],
            [ValidatorInput("v", tabular_data(10, seed=2), cand.delta)],
            ignore_progress,
            CancelToken(),
        )


def test_out_of_range_update_or_data_raise_fixed_point_overflow(round_) -> None:
    verifier, _, _, candidate = round_
    huge = candidate("big")
    huge.delta[0][0, 0, 0, 0] = 5000.0
    with pytest.raises(FixedPointOverflow) as info:
        verifier.commit(huge)
    assert "big" in info.value.user_message
    cand = candidate("ok")
    verifier.commit(cand)
    data = tabular_data(10, seed=3)
    bad = dataclasses.replace(data, x=data.x * 1e4)
    with pytest.raises(FixedPointOverflow):
        verifier.score([cand], [ValidatorInput("v", bad, cand.delta)], ignore_progress, CancelToken())


def test_candidate_of_another_round_is_refused(round_) -> None:
    verifier, _, _, candidate = round_
    with pytest.raises(SmpcError):
        verifier.commit(dataclasses.replace(candidate("late"), round_number=7))


def test_cancel_stops_scoring_between_batches(round_) -> None:
    from core.errors import Cancelled

    verifier, _, _, candidate = round_
    cand = candidate("a")
    verifier.commit(cand)
    token = CancelToken()
    seen = []

    def progress(report) -> None:
        seen.append(report)
        token.cancel()  # cancelled as soon as the first candidate starts

    with pytest.raises(Cancelled):
        verifier.score([cand], [ValidatorInput("v", tabular_data(40, seed=4), cand.delta)], progress, token)
    assert len(seen) == 1

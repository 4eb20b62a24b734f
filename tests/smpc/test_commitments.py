"""What is aggregated is what was verified and committed; out-of-range values are refused; each
hospital shares only its own inputs and learns only its own scores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.errors import Cancelled
from core.federation.interfaces import VerificationPending
from core.federation.types import Candidate, ValidatorInput
from core.models.architecture import tabular_cnn_spec
from core.models.training import initial_weights
from core.models.weights import add, weights_hash
from core.progress import CancelToken, ignore_progress
from smpc import shared_vars as names
from smpc.errors import CommitmentMismatch, FixedPointOverflow, SmpcError
from smpc.factory import build_in_process
from tests.smpc.scenarios import MemoryFacts, tabular_data

SPEC = tabular_cnn_spec(12, 2)


@pytest.fixture(scope="module")
def federation():
    ledger = MemoryFacts()
    fed = build_in_process(SPEC, ledger, batch_size=16)
    yield fed, ledger
    fed.close()


@pytest.fixture
def round_(federation):
    fed, ledger = federation
    glob = initial_weights(SPEC, 0)
    rng = np.random.default_rng(0)
    round_.number = getattr(round_, "number", 0) + 1  # a fresh round per test
    n = round_.number

    def candidate(name: str, scale: float = 0.05) -> Candidate:
        delta = [rng.normal(scale=scale, size=w.shape).astype(np.float32) for w in glob]
        return Candidate(name, n, delta, 20, weights_hash(add(glob, delta)))

    def commit(cand: Candidate, rows: int = 20):
        owner = fed.owner(cand.hospital_id)
        owner.begin_round(n, glob)
        validator = ValidatorInput(cand.hospital_id, tabular_data(rows, seed=len(cand.hospital_id)), cand.delta)
        commitment = owner.commit(cand, validator)
        ledger.record(commitment)
        return owner, validator, commitment

    yield fed, glob, n, candidate, commit, ledger


def test_commitment_names_one_salted_hash_per_share_holder(round_) -> None:
    fed, _, _, candidate, commit, _ = round_
    cand = candidate("a")
    _, _, first = commit(cand)
    _, _, second = commit(cand)
    assert len(first.share_commitments) == 2
    assert all(len(h) == 64 for h in first.share_commitments)
    assert first.model_hash == cand.model_hash
    assert set(first.share_commitments).isdisjoint(second.share_commitments)  # fresh shares and salt


def test_each_holder_receives_one_uniform_share_not_the_update(round_) -> None:
    fed, _, n, candidate, commit, _ = round_
    cand = candidate("a")
    commit(cand)
    held = [h._updates[(n, 0)]["a"].tensors for h in fed.holders]
    encoded = [fed.driver.session.fmt.encode(d, what="test") for d in cand.delta]
    for share in held:  # neither share alone is the encoded update
        assert not any(np.array_equal(s, e) for s, e in zip(share, encoded, strict=True))
    total = [(a.view(np.uint64) + b.view(np.uint64)).view(np.int64) for a, b in zip(*held, strict=True)]
    assert all(np.array_equal(t, e) for t, e in zip(total, encoded, strict=True))


def test_aggregating_a_share_changed_after_commitment_is_refused(round_) -> None:
    fed, glob, n, candidate, commit, ledger = round_
    cand = candidate("a")
    owner, validator, commitment = commit(cand)
    fed.driver.score_round(n, 0, glob, ["a"], ignore_progress, CancelToken())
    slot = fed.driver._layouts[n].candidates.index("a")
    holder = fed.holders[1]
    value = holder.access.read([names.slot_name(slot, 1, 0)])[0].copy()
    value.flat[0] += 1  # a tampered share: the player's variable no longer holds what was committed
    holder.access.assign({names.slot_name(slot, 1, 0): value})
    ledger.decide(n, [cand])
    with pytest.raises(CommitmentMismatch) as info:
        fed.driver.aggregate(glob, [dataclasses.replace(cand, delta=[])], [commitment])
    assert info.value.hospital_id == "a" and info.value.player == "server1"


def test_forged_commitments_on_the_ledger_are_refused(round_) -> None:
    fed, glob, n, candidate, commit, ledger = round_
    cand = candidate("a")
    _, _, commitment = commit(cand)
    fed.driver.score_round(n, 0, glob, ["a"], ignore_progress, CancelToken())
    ledger.decide(n, [cand])
    ledger.record(dataclasses.replace(commitment, share_commitments=("0" * 64, "1" * 64)))
    with pytest.raises(CommitmentMismatch):
        fed.driver.aggregate(glob, [dataclasses.replace(cand, delta=[])], [commitment])
    ledger.record(commitment)  # the genuine commitment still aggregates
    result = fed.driver.aggregate(glob, [dataclasses.replace(cand, delta=[])], [commitment])
    np.testing.assert_allclose(result[0], glob[0] + cand.delta[0], atol=1e-4)


def test_a_validator_gets_only_its_own_scores_and_only_once_released(round_) -> None:
    fed, glob, n, candidate, commit, ledger = round_
    a, b = candidate("a"), candidate("b")
    owner_a, val_a, _ = commit(a, rows=9)
    commit(b, rows=30)
    with pytest.raises(VerificationPending):
        owner_a.score([a, b], [val_a], ignore_progress, CancelToken())
    fed.driver.score_round(n, 0, glob, ["a", "b"], ignore_progress, CancelToken())
    scores = owner_a.score([a, b], [val_a], ignore_progress, CancelToken())
    assert set(scores) == {("a", "a"), ("a", "b")}
    assert all(s.total == 9 for s in scores.values())
    with pytest.raises(SmpcError):  # an owner verifier scores for its own hospital only
        owner_a.score([a, b], [dataclasses.replace(val_a, hospital_id="b")], ignore_progress, CancelToken())
    with pytest.raises(SmpcError):  # a hospital that never validated has no place in the results
        fed.holders[0].scores_for("nobody", n, 0)


def test_out_of_range_update_or_data_raise_fixed_point_overflow(round_) -> None:
    fed, glob, n, candidate, commit, ledger = round_
    huge = candidate("big")
    huge.delta[0][0, 0, 0, 0] = 5000.0
    with pytest.raises(FixedPointOverflow) as info:
        commit(huge)
    assert "big" in info.value.user_message
    cand = candidate("ok")
    owner = fed.owner("ok")
    owner.begin_round(n, glob)
    data = tabular_data(10, seed=3)
    with pytest.raises(FixedPointOverflow):
        owner.commit(cand, ValidatorInput("ok", dataclasses.replace(data, x=data.x * 1e4), cand.delta))


def test_a_model_beyond_the_ring_after_adding_the_global_is_refused(round_) -> None:
    fed, glob, n, candidate, _, _ = round_
    owner = fed.owner("edge")
    shifted = [g.copy() for g in glob]
    shifted[0][...] = 2000.0  # global alone fits (|x| < 2187), global + delta does not
    owner.begin_round(n, shifted)
    delta = [np.zeros_like(g) for g in glob]
    delta[0][...] = 300.0  # within the norm bound, but 2300 > 2187 once added
    cand = Candidate("edge", n, delta, 5, weights_hash(add(shifted, delta)))
    with pytest.raises(FixedPointOverflow) as info:
        owner.commit(cand)
    assert "model of hospital edge" in str(info.value)


def test_candidate_of_another_round_is_refused(round_) -> None:
    fed, glob, n, candidate, _, _ = round_
    owner = fed.owner("late")
    owner.begin_round(n, glob)
    with pytest.raises(SmpcError):
        owner.commit(dataclasses.replace(candidate("late"), round_number=n + 7))


def test_cancel_stops_scoring_between_batches(round_) -> None:
    fed, glob, n, candidate, commit, ledger = round_
    cand = candidate("a")
    commit(cand, rows=40)
    token = CancelToken()
    seen = []

    def progress(report) -> None:
        seen.append(report)
        token.cancel()  # cancelled as soon as the first candidate starts

    with pytest.raises(Cancelled):
        fed.driver.score_round(n, 0, glob, ["a"], progress, token)
    assert len(seen) == 1

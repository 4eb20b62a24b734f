"""SMPC verification and aggregation against plain Keras (tf-encrypted's agreement tests):
the same correct counts, the same scores within fixed-point precision, the same decisions
across every attack, for both CNNs; secure FedAvg equal to plaintext FedAvg. Every hospital
shares its own inputs and reconstructs its own scores, as the roles do."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.federation.aggregators import FedAvg
from core.federation.plaintext_verifier import PlaintextVerifier
from core.federation.policy import VerificationPolicy
from core.progress import CancelToken, ignore_progress
from smpc.errors import SmpcError
from tests.smpc import scenarios


@pytest.fixture(scope="module", params=["tabular", "image"])
def scored(request):
    scenario = scenarios.build(request.param)
    secure_round = scenarios.secure_round(scenario, batch_size=32)
    plain_verifier = PlaintextVerifier(scenario.spec)
    plain_verifier.begin_round(2, scenario.global_weights)
    plain = plain_verifier.score(scenario.candidates, scenario.validators, ignore_progress, CancelToken())
    assert secure_round.federation.driver.session.fetched == []  # scoring revealed nothing to the driver
    yield scenario, secure_round.scores, plain, secure_round, secure_round.commitments
    secure_round.federation.close()


def test_correct_counts_match_plaintext(scored) -> None:
    _, secure, plain, _, _ = scored
    assert secure.keys() == plain.keys()
    diffs = [abs(secure[k].correct - plain[k].correct) for k in plain]
    # Exact but for a logit tie within the fixed-point resolution (1 sample at most).
    assert sum(diffs) <= 1, {k: (secure[k].correct, plain[k].correct) for k in plain}
    assert all(secure[k].total == plain[k].total for k in plain)


def test_similarity_norm_and_margin_match_plaintext(scored) -> None:
    _, secure, plain, _, _ = scored
    for key in plain:
        s, p = secure[key], plain[key]
        assert s.cosine == pytest.approx(p.cosine, abs=2e-4)
        assert s.norm == pytest.approx(p.norm, rel=1e-4, abs=1e-5)
        assert s.margin == pytest.approx(p.margin, rel=1e-3, abs=2e-3)
        assert s.reference_accuracy == p.reference_accuracy
        assert s.reference_norm == pytest.approx(p.reference_norm)
        assert s.reference_margin == pytest.approx(p.reference_margin, abs=1e-6)
        assert s.global_margin is not None and s.global_margin == pytest.approx(p.global_margin, abs=1e-6)


def test_decisions_match_plaintext_across_attacks(scored) -> None:
    scenario, secure, plain, _, _ = scored
    policy = VerificationPolicy()

    def votes(matrix, policy=policy):  # each validator judges its own row, as a node does
        rows: dict[str, dict] = {}
        for (validator, candidate), s in matrix.items():
            rows.setdefault(validator, {})[candidate] = s
        return {(v, c): c in policy.accepted(row) for v, row in rows.items() for c in row}

    secure_votes, plain_votes = votes(secure), votes(plain)
    assert secure_votes == plain_votes
    # The strict confidence test, on splits of at least `strict_margin_cases` cases, decides alike
    # too; the scenario's splits are below the default, so it is lowered to their size here.
    strict = VerificationPolicy(strict_margin_cases=float(min(v.validation.num_samples for v in scenario.validators)))
    assert strict.margin_ratio(scenario.validators[0].validation.num_samples) == 1.0
    assert votes(secure, strict) == votes(plain, strict)
    # The scenario must exercise both outcomes, or agreement would prove nothing.
    rejected = {c for (_, c), ok in plain_votes.items() if not ok}
    assert {"sign_flip", "scaling", "noise"} <= rejected
    assert any(plain_votes[(v.hospital_id, "h0")] for v in scenario.validators)


def test_secure_fedavg_equals_plaintext_fedavg(scored) -> None:
    scenario, _, _, run, commitments = scored
    accepted = run.facts.decide(2, [c for c in scenario.candidates if c.hospital_id in {"h0", "h1", "h2", "scaling"}])
    coms = [commitments[c.hospital_id] for c in accepted]
    # The driver aggregates without the deltas: the players hold them as shares.
    secure = run.federation.driver.aggregate(scenario.global_weights, [dataclasses.replace(c, delta=[]) for c in accepted], coms)
    plain = FedAvg().aggregate(scenario.global_weights, accepted, coms)
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(secure, plain, strict=True))
    assert worst <= 1e-4
    assert all(a.dtype == np.float32 and a.shape == b.shape for a, b in zip(secure, plain, strict=True))


def test_the_driver_fetches_nothing_and_the_holders_sum_what_the_chain_accepted(scored) -> None:
    scenario, _, _, run, commitments = scored
    driver = run.federation.driver
    accepted = run.facts.decide(2, [c for c in scenario.candidates if c.hospital_id in {"h0", "h1"}])
    blind = [dataclasses.replace(c, delta=[]) for c in accepted]
    result = driver.aggregate(scenario.global_weights, blind, [commitments[c.hospital_id] for c in accepted])
    # Scoring every candidate for every validator and aggregating fetched nothing from the
    # session graphs: the holders hand out their shares of the weighted sum themselves.
    assert driver.session.fetched == []
    plain = FedAvg().aggregate(scenario.global_weights, accepted, [commitments[c.hospital_id] for c in accepted])
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(result, plain, strict=True)) <= 1e-4
    # Asking for another set than the chain decided is refused: the holders sum what it accepted.
    other = [dataclasses.replace(c, delta=[]) for c in scenario.candidates if c.hospital_id in {"h0", "noise"}]
    with pytest.raises(SmpcError, match="summed other updates"):
        driver.aggregate(scenario.global_weights, other, [commitments[c.hospital_id] for c in other])

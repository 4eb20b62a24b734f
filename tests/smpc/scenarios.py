"""Small federations for the SMPC tests: honest and attacked candidates of one round, built with
core's training and attacks, and the plaintext reference the SMPC results must agree with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.attacks.backdoor import BackdoorAttack
from core.attacks.base import Attack, AttackContext
from core.attacks.label_flip import LabelFlipAttack
from core.attacks.noise import NoiseAttack
from core.attacks.scaling import ScalingAttack
from core.attacks.sign_flip import SignFlipAttack
from core.data.dataset import DataKind, Dataset
from core.federation.types import Candidate, Commitment, ValidatorInput
from core.models.architecture import ModelSpec, image_cnn_spec, tabular_cnn_spec
from core.models.training import TrainingConfig, initial_weights, train_model
from core.models.weights import Weights, add, subtract, weights_hash

ATTACKS: dict[str, Attack] = {
    "label_flip": LabelFlipAttack(),
    "sign_flip": SignFlipAttack(),
    "scaling": ScalingAttack(5.0),
    "noise": NoiseAttack(),
    "backdoor": BackdoorAttack(boost=3.0),
}


@dataclass
class Scenario:
    spec: ModelSpec
    global_weights: Weights
    candidates: list[Candidate]
    validators: list[ValidatorInput]


def tabular_data(n: int, seed: int, features: int = 12) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, features)) + np.outer(2 * y - 1, np.linspace(1.0, 0.0, features))
    return Dataset(
        f"tab{seed}", DataKind.TABLE, x.astype(np.float32), y.astype(np.int64), ("benign", "malignant")
    )


def image_data(n: int, seed: int, size: int = 16, classes: int = 3) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.uniform(0.0, 0.4, size=(n, size, size, 1))
    for c in range(classes):  # each class brightens its own band of rows
        band = slice(c * size // classes, (c + 1) * size // classes)
        x[y == c, band, :, :] += 0.5
    names = tuple(f"class{c}" for c in range(classes))
    return Dataset(
        f"img{seed}", DataKind.IMAGE, np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64), names
    )


def build(
    kind: str, *, honest: int = 3, attacks: tuple[str, ...] = tuple(ATTACKS), val_rows: int = 30
) -> Scenario:
    """One round: `honest` hospitals and one attacker per attack, all trained from a shared
    global model that is itself trained a little, as in a later round."""
    if kind == "tabular":
        spec, make = tabular_cnn_spec(12, 2), tabular_data
    else:
        spec, make = image_cnn_spec((16, 16, 1), 3), image_data
    config = TrainingConfig(epochs=2, batch_size=16, learning_rate=3e-3, seed=0)
    global_weights = train_model(
        spec, make(120, seed=99), config, initial_weights=initial_weights(spec, 0)
    ).weights
    names = [f"h{i}" for i in range(honest)] + list(attacks)
    trained: dict[str, tuple[Dataset, Weights]] = {}
    for i, name in enumerate(names):
        train = make(60, seed=i)
        attack = ATTACKS.get(name)
        rng = np.random.default_rng(i)
        data = attack.poison_data(train, rng) if attack else train
        weights = train_model(
            spec,
            data,
            TrainingConfig(epochs=2, batch_size=16, learning_rate=3e-3, seed=i),
            initial_weights=global_weights,
        ).weights
        trained[name] = (train, subtract(weights, global_weights))
    candidates = []
    for i, name in enumerate(names):
        train, delta = trained[name]
        attack = ATTACKS.get(name)
        if attack:
            ctx = AttackContext(
                round_number=2,
                num_hospitals=len(names),
                global_weights=global_weights,
                spec=spec,
                train_data=train,
                honest_delta=delta,
                peer_deltas=[trained[n][1] for n in names if n != name],
                rng=np.random.default_rng(100 + i),
            )
            delta = attack.poison_update(ctx)
        candidates.append(Candidate(name, 2, delta, 60, weights_hash(add(global_weights, delta))))
    validators = [
        ValidatorInput(f"h{i}", make(val_rows, seed=50 + i), candidates[i].delta) for i in range(honest)
    ]
    return Scenario(spec, global_weights, candidates, validators)


class MemoryFacts:
    """The round state a share holder reads, kept in memory: what the tests record 'on chain'."""

    def __init__(self) -> None:
        self.commitments: dict[tuple[int, str], Commitment] = {}
        self.accepted: dict[int, dict[str, int]] = {}

    def record(self, commitment: Commitment) -> Commitment:
        self.commitments[(commitment.round_number, commitment.hospital_id)] = commitment
        return commitment

    def decide(self, round_number: int, accepted: list[Candidate]) -> list[Candidate]:
        """The round's decision: these candidates accepted, with their sample counts."""
        self.accepted[round_number] = {c.hospital_id: c.num_samples for c in accepted}
        return accepted

    def share_commitments(self, round_number: int, hospital_id: str) -> tuple[str, ...]:
        c = self.commitments.get((round_number, hospital_id))
        return c.share_commitments if c is not None else ()

    def accepted_samples(self, round_number: int) -> dict[str, int] | None:
        return self.accepted.get(round_number)


@dataclass
class SecureRound:
    """A scenario's round run through the secure parts in one process, as the roles run them:
    each hospital shares its own inputs, the driver scores, each validator collects its own."""

    federation: object  # smpc.factory.SecureFederation
    commitments: dict
    scores: dict  # ScoreMatrix
    facts: MemoryFacts


def secure_round(scenario: Scenario, *, batch_size: int = 32, capacity: int = 8, round_number: int = 2,
                 attempt: int = 0) -> SecureRound:
    from core.progress import CancelToken, ignore_progress
    from smpc.factory import build_in_process

    facts = MemoryFacts()
    fed = build_in_process(scenario.spec, facts, batch_size=batch_size, validator_capacity=capacity)
    validators = {v.hospital_id: v for v in scenario.validators}
    owners = {c.hospital_id: fed.owner(c.hospital_id) for c in scenario.candidates}
    recorded = {}
    for c in scenario.candidates:
        owners[c.hospital_id].begin_round(round_number, scenario.global_weights, attempt)
        recorded[c.hospital_id] = facts.record(owners[c.hospital_id].commit(c, validators.get(c.hospital_id)))
    fed.driver.score_round(round_number, attempt, scenario.global_weights,
                           [c.hospital_id for c in scenario.candidates], ignore_progress, CancelToken())
    scores: dict = {}
    for v in scenario.validators:
        scores.update(owners[v.hospital_id].score(scenario.candidates, [v], ignore_progress, CancelToken()))
    return SecureRound(fed, recorded, scores, facts)

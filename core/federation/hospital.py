"""An in-process hospital: trains on its own split, validates, votes; optionally an attacker.

This is the `HospitalLink` of the embedded default and of simulations. A hospital running on
its own host will be reached through another `HospitalLink` and does the same three things.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from core.attacks.base import Attack, AttackContext
from core.data.dataset import Dataset
from core.errors import Cancelled, ModelError, describe_error
from core.federation.interfaces import HospitalLink
from core.federation.policy import VerificationPolicy
from core.federation.types import Candidate, HospitalInfo, Scores, ValidatorInput
from core.models.architecture import ModelSpec
from core.models.training import TrainingConfig, train_model
from core.models.weights import Weights, add, as_weights, subtract, weights_hash
from core.progress import CancelToken, ProgressSink


@dataclass(frozen=True)
class HospitalData:
    train: Dataset
    validation: Dataset


def candidate_from(hospital_id: str, round_number: int, global_weights: Weights, delta: Weights,
                   num_samples: int) -> Candidate:
    """A candidate whose model hash is that of the weights it proposes (global + delta)."""
    delta = as_weights(delta)
    return Candidate(
        hospital_id=hospital_id,
        round_number=round_number,
        delta=delta,
        num_samples=num_samples,
        model_hash=weights_hash(add(global_weights, delta)),
    )


class LocalHospital(HospitalLink):
    """A hospital in this process. Honest unless given an `attack`; an attacker also votes
    dishonestly: it accepts its colluders and rejects everyone else."""

    def __init__(
        self,
        info: HospitalInfo,
        data: HospitalData,
        spec: ModelSpec,
        training: TrainingConfig,
        *,
        attack: Attack | None = None,
        colluders: Sequence[str] = (),
        num_hospitals: int = 1,
        policy: VerificationPolicy | None = None,
    ) -> None:
        # One class is a legitimate member of a skewed federation (a clinic that sees only benign
        # cases): it trains from the global model, and the validators judge what that gives.
        self._info = info
        self.data = data
        self._spec = spec
        self._training = training
        self._attack = attack
        self._colluders = frozenset(colluders) | {info.hospital_id}
        self._num_hospitals = num_hospitals
        self._policy = policy  # the consortium's, public: an adaptive attack tailors its update to it
        self._global: Weights | None = None
        self._honest_delta: Weights | None = None
        # A stable per-hospital seed offset, the same in every process (hash() is salted).
        self._seed_offset = zlib.crc32(info.hospital_id.encode()) % 10_000

    @property
    def info(self) -> HospitalInfo:
        return self._info

    @property
    def attack(self) -> Attack | None:
        return self._attack

    @property
    def wants_peer_updates(self) -> bool:
        return self._attack is not None

    def _rng(self, round_number: int) -> np.random.Generator:
        return np.random.default_rng([self._training.seed, self._seed_offset, round_number])

    def train(
        self, round_number: int, global_weights: Weights, progress: ProgressSink, cancel: CancelToken
    ) -> Candidate:
        data = self.data.train
        if self._attack is not None:
            data = self._attack.poison_data(data, self._rng(round_number))
        config = replace(self._training, seed=self._training.seed + 1000 * round_number + self._seed_offset)
        result = train_model(
            self._spec,
            data,
            config,
            initial_weights=global_weights,
            progress=progress,
            cancel=cancel,
            label=self._info.hospital_id,
        )
        self._global = as_weights(global_weights)
        self._honest_delta = subtract(result.weights, global_weights)
        return candidate_from(
            self._info.hospital_id, round_number, global_weights, self._honest_delta, self.data.train.num_samples
        )

    def revise(self, own: Candidate, round_candidates: Sequence[Candidate]) -> Candidate:
        if self._attack is None or self._global is None or self._honest_delta is None:
            return own
        ctx = AttackContext(
            round_number=own.round_number,
            num_hospitals=self._num_hospitals,
            global_weights=self._global,
            spec=self._spec,
            train_data=self.data.train,
            honest_delta=self._honest_delta,
            peer_deltas=tuple(c.delta for c in round_candidates if c.hospital_id not in self._colluders),
            rng=self._rng(own.round_number),
            num_colluders=len(self._colluders),
            policy=self._policy,
            training=self._training,
        )
        try:
            poisoned = self._attack.poison_update(ctx)
            return candidate_from(own.hospital_id, own.round_number, self._global, poisoned, own.num_samples)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's garbage is this hospital's failure, final for the round
            raise ModelError(f"The attack plugin '{self._attack.name}' gave no usable update: {describe_error(exc)}",
                             detail=type(exc).__name__) from exc

    def validator_input(self, own: Candidate) -> ValidatorInput:
        # An attacker's reference would be its poisoned update; its votes ignore scores anyway.
        reference = self._honest_delta if self._honest_delta is not None else own.delta
        return ValidatorInput(self._info.hospital_id, self.data.validation, reference)

    def vote(self, round_number: int, scores: Mapping[str, Scores], policy: VerificationPolicy) -> tuple[str, ...]:
        if self._attack is not None:
            return tuple(cid for cid in scores if cid in self._colluders)
        return policy.accepted(scores)

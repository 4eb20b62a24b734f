"""The attack interface that every simulated poisoning hospital goes through.

An attack may poison the hospital's data before local training (label flipping, backdoors) and
may poison the trained update before it is submitted (sign flipping, scaling, noise). The
update step sees what the colluding omniscient attacker of robustness research sees: the global
model, its own data and honest update, the honest updates of the round, how many hospitals
collude, and the verification policy the honest validators apply (it is public: its digest is
on the ledger), so an adaptive attack can tailor its update to pass it.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from core.data.dataset import Dataset
from core.models.architecture import ModelSpec
from core.models.weights import Weights

if TYPE_CHECKING:
    from core.federation.policy import VerificationPolicy
    from core.models.training import TrainingConfig


@dataclass(frozen=True)
class AttackContext:
    round_number: int
    num_hospitals: int
    global_weights: Weights
    spec: ModelSpec
    train_data: Dataset  # the attacker's own (unpoisoned) training split
    honest_delta: Weights  # what the attacker's training produced (on poisoned data, if any)
    peer_deltas: Sequence[Weights] = field(default_factory=tuple)  # other hospitals' updates
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    num_colluders: int = 1  # hospitals attacking together, this one included
    policy: VerificationPolicy | None = None  # what an honest validator accepts, when known
    training: TrainingConfig | None = None  # how the attacker's hospital trains locally


class Attack(ABC):
    """Base of every attack: both steps default to honest behaviour."""

    name: ClassVar[str] = "attack"
    # True for attacks computed from the round's benign updates (`AttackContext.peer_deltas`):
    # the omniscient adversary. A simulation steps attackers after the honest hospitals, so
    # they see every benign update of the round.
    wants_peer_updates: ClassVar[bool] = False

    def poison_data(self, data: Dataset, rng: np.random.Generator) -> Dataset:
        """Returns the data the attacker trains on."""
        return data

    def poison_update(self, ctx: AttackContext) -> Weights:
        """Returns the update (delta from the global model) the attacker submits."""
        return ctx.honest_delta

    def describe(self) -> dict[str, Any]:
        """The attack's name and parameters, for reports."""
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"name": self.name, **params}


@runtime_checkable
class MeasurableBackdoor(Protocol):
    """An attack that plants a backdoor and can say how to measure it: a model's accuracy on
    `backdoor_test_set(test)` is the attack's success rate."""

    def backdoor_test_set(self, data: Dataset) -> Dataset: ...

"""The attack interface that every simulated poisoning hospital goes through.

An attack may poison the hospital's data before local training (label flipping, backdoors) and
may poison the trained update before it is submitted (sign flipping, scaling, noise). The
update step sees what the colluding omniscient attacker of robustness research sees: the global
model, its own data and honest update, and the honest updates of the round.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from core.data.dataset import Dataset
from core.models.architecture import ModelSpec
from core.models.weights import Weights


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


class Attack(ABC):
    """Base of every attack: both steps default to honest behaviour."""

    name: ClassVar[str] = "attack"

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

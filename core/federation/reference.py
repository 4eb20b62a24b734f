"""A validator's reference: its own update on its own split, the yardstick the verification
policy compares every candidate with.

It concerns only the validator's own data and model, so every verifier computes it in the clear
with this one function; that keeps the SMPC verifier's decisions equal to the plaintext one's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.federation.types import ValidatorInput, mean_margin
from core.models.evaluation import ModelEvaluator
from core.models.weights import Weights, add, norm


@dataclass(frozen=True)
class Reference:
    """The `reference_*` and `global_margin` fields of a validator's `Scores`."""

    accuracy: float
    margin: float
    norm: float
    global_margin: float


def reference_scores(
    evaluator: ModelEvaluator, global_weights: Weights, validator: ValidatorInput
) -> Reference:
    """Accuracy and mean margin of global + the validator's own delta on its split, the norm of
    that delta, and the global model's own mean margin there."""
    data = validator.validation
    logits = evaluator.logits(add(global_weights, validator.own_delta), data.x)
    return Reference(
        accuracy=float(np.mean(np.argmax(logits, axis=1) == data.y)),
        margin=mean_margin(logits, data.y),
        norm=norm(validator.own_delta),
        global_margin=mean_margin(evaluator.logits(global_weights, data.x), data.y),
    )

"""Gaussian noise updates: the "Gaussian attack" baseline of Blanchard et al. 2017 and Fang et
al. 2020, a Byzantine hospital that submits random weights instead of (or on top of) training."""

from __future__ import annotations

from numbers import Real

import numpy as np

from core.attacks.base import Attack, AttackContext
from core.errors import ConfigError
from core.models.weights import Weights, flatten

MODES = ("replace", "add")


class NoiseAttack(Attack):
    """Submits N(0, std^2) noise per weight, replacing the honest update or added to it.

    std is `sigma` itself, or with `relative` sigma x the root-mean-square of the honest update,
    so the noise is sigma times as large as a real update whatever the model. The default
    absolute 0.5 dwarfs the weights of a freshly initialised CNN and wrecks the model.
    """

    name = "noise"

    def __init__(self, sigma: float = 0.5, *, mode: str = "replace", relative: bool = False) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, Real) or not sigma > 0.0:
            raise ConfigError(f"Noise: sigma must be a positive number, got {sigma!r}.")
        if mode not in MODES:
            raise ConfigError(f"Noise: mode must be one of {', '.join(MODES)}, got {mode!r}.")
        if not isinstance(relative, bool):
            raise ConfigError(f"Noise: relative must be true or false, got {relative!r}.")
        self.sigma: float = float(sigma)
        self.mode: str = mode
        self.relative: bool = relative

    def std(self, honest_delta: Weights) -> float:
        """The noise's standard deviation per weight for this honest update."""
        if not self.relative:
            return self.sigma
        flat = flatten(honest_delta).astype(np.float64)
        rms = float(np.sqrt(np.mean(flat**2))) if flat.size else 0.0
        return self.sigma * rms

    def poison_update(self, ctx: AttackContext) -> Weights:
        std = self.std(ctx.honest_delta)
        out: Weights = []
        for tensor in ctx.honest_delta:
            noise = ctx.rng.normal(0.0, std, size=np.shape(tensor)).astype(np.float32)
            out.append(noise + np.asarray(tensor, np.float32) if self.mode == "add" else noise)
        return out

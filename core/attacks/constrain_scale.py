"""Constrain-and-scale (Bagdasaryan, Veit, Hua, Estrin and Shmatikov, AISTATS 2020, "How To
Backdoor Federated Learning", section 4.2): the attacker trains its backdoor with a loss that
also keeps its update looking benign, then scales the update up, as model replacement does, but
only as far as the validators' norm bound allows."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np

from core.attacks.backdoor import BackdoorAttack
from core.attacks.base import Attack, AttackContext
from core.data.dataset import Dataset
from core.errors import ConfigError, ModelError
from core.models.weights import Weights, as_weights, flatten, norm, scale, subtract, unflatten

log = logging.getLogger(__name__)

ANOMALIES = ("cosine", "distance")
_UNDER_BOUND = 0.999  # stays under the bound despite float32 rounding of the scaled update


def _optional_positive(name: str, value: object, kind: type) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, kind) or not (
        math.isfinite(value) and value > 0  # type: ignore[call-overload, operator]
    ):
        raise ConfigError(f"Constrain-and-scale: {name} must be a positive number, got {value!r}.")


class ConstrainScaleAttack(Attack):
    """Trains from the global model on its data with the backdoor's trigger stamped on a
    `fraction` of it (relabelled `target_label`; trigger as `BackdoorAttack`'s), minimising

        alpha x L_class + (1 - alpha) x L_ano,

    then submits gamma x the update with gamma = min(boost, bound / ||update||).

    - `alpha`: weight of the classification loss (the paper's alpha; it sweeps it, lower is
      stealthier). Default 0.7.
    - `anomaly`: L_ano. "cosine" (default): 1 - cosine of the update with the mean of the round's
      benign updates, the direction the validators compare with, weighted by ||update|| over the
      mean's norm (held fixed in the gradient: 1 - cosine alone has gradients ~ 1/||update||,
      which swamp the classification loss while the update is still tiny, and the backdoor is
      never learnt); "distance": ||update||^2 over the benign mean's ||.||^2, the paper's
      distance to the global model made unit-free. Without peer updates the reference is the
      attacker's own honest update.
    - `norm_bound`: bound on the submitted update's L2 norm. Default None: the policy's,
      `max_norm_ratio` x the smallest benign update (each honest validator's reference is its
      own update), so every honest validator finds the norm within its limit.
    - `boost`: the scale wanted, default the number of hospitals (model replacement).
    - `epochs`, `learning_rate`, `batch_size`: the backdoor training; default as the hospital
      trains (else 5, 0.005, 16).
    - trigger: `trigger_size`, `trigger_value`, `trigger_features`, `feature_value` as in
      `BackdoorAttack`, whose `backdoor_test_set` measures this attack's success too.

    Its hospital's own training stays honest (`poison_data` leaves the data alone): that update
    is one more benign one to hide among.
    """

    name = "constrain_scale"
    wants_peer_updates = True

    def __init__(
        self,
        target_label: int = 0,
        fraction: float = 0.3,
        *,
        alpha: float = 0.7,
        anomaly: str = "cosine",
        norm_bound: float | None = None,
        boost: float | None = None,
        epochs: int | None = None,
        learning_rate: float | None = None,
        batch_size: int | None = None,
        trigger_size: int = 3,
        trigger_value: float = 1.0,
        trigger_features: Sequence[int] | None = None,
        feature_value: float = 4.0,
    ) -> None:
        self._backdoor = BackdoorAttack(target_label, fraction, trigger_size=trigger_size,
                                        trigger_value=trigger_value, trigger_features=trigger_features,
                                        feature_value=feature_value)
        if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0.0 < alpha <= 1.0:
            raise ConfigError(f"Constrain-and-scale: alpha must lie in (0, 1], got {alpha!r}.")
        if anomaly not in ANOMALIES:
            raise ConfigError(f"Constrain-and-scale: anomaly must be one of {', '.join(ANOMALIES)}, got {anomaly!r}.")
        _optional_positive("norm_bound", norm_bound, Real)
        _optional_positive("boost", boost, Real)
        _optional_positive("epochs", epochs, Integral)
        _optional_positive("batch_size", batch_size, Integral)
        _optional_positive("learning_rate", learning_rate, Real)
        if learning_rate is not None and learning_rate >= 1.0:
            raise ConfigError(f"Constrain-and-scale: learning_rate must lie in (0, 1), got {learning_rate!r}.")
        b = self._backdoor
        self.target_label, self.fraction = b.target_label, b.fraction
        self.alpha: float = float(alpha)
        self.anomaly: str = anomaly
        self.norm_bound: float | None = None if norm_bound is None else float(norm_bound)
        self.boost: float | None = None if boost is None else float(boost)
        self.epochs: int | None = None if epochs is None else int(epochs)
        self.learning_rate: float | None = None if learning_rate is None else float(learning_rate)
        self.batch_size: int | None = None if batch_size is None else int(batch_size)
        self.trigger_size, self.trigger_value = b.trigger_size, b.trigger_value
        self.trigger_features, self.feature_value = b.trigger_features, b.feature_value

    def backdoor_test_set(self, data: Dataset) -> Dataset:
        """Triggered samples of other classes labelled with the target (see `BackdoorAttack`)."""
        return self._backdoor.backdoor_test_set(data)

    def bound(self, ctx: AttackContext) -> float | None:
        """The norm the submitted update must stay within, None when nothing bounds it."""
        if self.norm_bound is not None:
            return self.norm_bound
        if ctx.policy is not None and ctx.peer_deltas:
            return ctx.policy.max_norm_ratio * min(norm(d) for d in ctx.peer_deltas)
        return None

    def poison_update(self, ctx: AttackContext) -> Weights:
        references = list(ctx.peer_deltas) or [ctx.honest_delta]
        reference = np.mean([flatten(d).astype(np.float64) for d in references], axis=0)
        data = self._backdoor.poison_data(ctx.train_data, ctx.rng)
        delta = self._train(ctx, data, reference)
        wanted = self.boost if self.boost is not None else float(ctx.num_hospitals)
        bound, length = self.bound(ctx), norm(delta)
        if bound is None:
            log.warning("round %d: constrain-and-scale knows no norm bound (no policy with peer updates, no "
                        "norm_bound); it boosts by %g unconstrained.", ctx.round_number, wanted)
            gamma = wanted
        else:
            gamma = min(wanted, _UNDER_BOUND * bound / length) if length > 0 else wanted
        log.info("round %d: constrain-and-scale scales its update (norm %.3g) by gamma %.3g (bound %s)",
                 ctx.round_number, length, gamma, "none" if bound is None else f"{bound:.3g}")
        return scale(delta, gamma)

    def _train(self, ctx: AttackContext, data: Dataset, reference: np.ndarray) -> Weights:
        """The constrained backdoor update, trained by a custom loop (Keras' fit has no loss on
        the weights themselves)."""
        import keras  # imported here: the registry lists this attack without loading Keras

        from core.models.keras_builder import build_keras_model

        if keras.backend.backend() != "tensorflow":
            raise ModelError("Constrain-and-scale trains with TensorFlow; set KERAS_BACKEND=tensorflow.")
        import tensorflow as tf

        cfg = ctx.training
        epochs = self.epochs or (cfg.epochs if cfg else 5)
        batch = self.batch_size or (cfg.batch_size if cfg else 16)
        lr = self.learning_rate or (cfg.learning_rate if cfg else 0.005)
        seed = (cfg.seed if cfg else 0) + 7919 * ctx.round_number
        model = build_keras_model(ctx.spec, seed=seed, learning_rate=lr)
        model.set_weights(ctx.global_weights)
        variables = model.trainable_variables
        if len(variables) != len(ctx.global_weights):
            raise ModelError("Constrain-and-scale needs a model whose weights are all trainable.",
                             detail=f"{len(variables)} trainable of {len(ctx.global_weights)}")
        start = [tf.constant(np.asarray(w, np.float32)) for w in ctx.global_weights]
        ref = [tf.constant(r) for r in unflatten(reference.astype(np.float32), ctx.global_weights)]
        ref_norm = tf.constant(max(float(np.linalg.norm(reference)), 1e-12), tf.float32)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        optimizer = keras.optimizers.Adam(learning_rate=lr)
        alpha, mode = self.alpha, self.anomaly

        @tf.function
        def step(x: tf.Tensor, y: tf.Tensor) -> None:
            with tf.GradientTape() as tape:
                classification = loss_fn(y, model(x, training=True))
                moved = [v - s for v, s in zip(variables, start, strict=True)]
                squared = tf.add_n([tf.reduce_sum(m * m) for m in moved])
                if mode == "cosine":
                    dot = tf.add_n([tf.reduce_sum(m * r) for m, r in zip(moved, ref, strict=True)])
                    length = tf.sqrt(squared + 1e-20)
                    anomaly = (1.0 - dot / (length * ref_norm)) * tf.stop_gradient(length / ref_norm)
                else:
                    anomaly = squared / (ref_norm * ref_norm)
                loss = alpha * classification + (1.0 - alpha) * anomaly
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

        order_rng = np.random.default_rng(seed)
        x, y = data.x.astype(np.float32), data.y.astype(np.int64)
        for _ in range(epochs):
            order = order_rng.permutation(data.num_samples)
            for i in range(0, data.num_samples, batch):
                chosen = order[i : i + batch]
                step(tf.constant(x[chosen]), tf.constant(y[chosen]))
        trained = as_weights(model.get_weights())
        return subtract(trained, ctx.global_weights)

"""Builds a Keras 3 model from a `ModelSpec`, with deterministic initial weights per seed."""

from __future__ import annotations

import keras

from core.errors import ModelError
from core.models.architecture import LayerSpec, ModelSpec


def _keras_layer(layer: LayerSpec) -> keras.layers.Layer:
    p = layer.params
    if layer.kind == "reshape":
        return keras.layers.Reshape(tuple(p["target_shape"]))
    if layer.kind == "conv2d":
        return keras.layers.Conv2D(
            p["filters"], tuple(p["kernel_size"]), strides=tuple(p["strides"]), padding=p["padding"]
        )
    if layer.kind == "relu":
        return keras.layers.ReLU()
    if layer.kind == "avg_pool":
        return keras.layers.AveragePooling2D(tuple(p["pool_size"]))
    if layer.kind == "flatten":
        return keras.layers.Flatten()
    if layer.kind == "dense":
        return keras.layers.Dense(p["units"])
    raise ModelError(f"Layer kind '{layer.kind}' is not supported.")


def build_keras_model(spec: ModelSpec, *, seed: int = 0, learning_rate: float = 1e-3) -> keras.Model:
    """A compiled classifier outputting logits; the same spec and seed give the same weights."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input(shape=spec.input_shape)] + [_keras_layer(layer) for layer in spec.layers],
        name=spec.architecture,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model

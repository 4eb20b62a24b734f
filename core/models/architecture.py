"""The CNN architectures, described once as data so Keras and TF-Encrypted build the same net.

Only layers that TF-Encrypted evaluates are used (reshape, Conv2D, ReLU, average pooling,
flatten, dense), and few activations, because comparisons dominate SMPC cost: strided
convolutions and average pooling shrink the maps before any ReLU. The tabular "1D" CNN is a
Conv2D with k x 1 kernels over a (features, 1, 1) view, since TF-Encrypted has no Conv1D. The
nets output logits: softmax is monotone, so the predicted class (argmax) needs none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.data.dataset import DataKind, Dataset
from core.errors import ModelError


@dataclass(frozen=True)
class LayerSpec:
    kind: str  # "reshape" | "conv2d" | "relu" | "avg_pool" | "flatten" | "dense"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """A whole network: its input shape (per sample), classes and layers in order."""

    architecture: str  # "tabular_cnn" | "image_cnn"
    input_shape: tuple[int, ...]
    num_classes: int
    layers: tuple[LayerSpec, ...]

    def describe(self) -> str:
        parts = [f"{layer.kind}({', '.join(f'{k}={v}' for k, v in layer.params.items())})" for layer in self.layers]
        return f"{self.architecture} {self.input_shape} -> {self.num_classes}: " + " > ".join(parts)


ARCHITECTURES = ("tabular_cnn", "image_cnn")
POOL_FROM_ROWS = 8  # convolution rows from which the tabular CNN pools before its ReLU


def tabular_cnn_spec(num_features: int, num_classes: int, *, filters: int = 8, hidden: int = 16) -> ModelSpec:
    if num_features < 3:
        raise ModelError(f"The tabular CNN needs at least 3 feature columns, got {num_features}.")
    conv_rows = (num_features - 3) // 2 + 1
    # A wide table pools pairs of rows before the activation: half the ReLUs, each an SMPC
    # comparison (breast cancer: 21x -> 13x Keras). A narrow one would lose too much to pooling.
    pool = (LayerSpec("avg_pool", {"pool_size": (2, 1)}),) if conv_rows >= POOL_FROM_ROWS else ()
    return ModelSpec(
        architecture="tabular_cnn",
        input_shape=(num_features,),
        num_classes=num_classes,
        layers=(
            LayerSpec("reshape", {"target_shape": (num_features, 1, 1)}),
            LayerSpec("conv2d", {"filters": filters, "kernel_size": (3, 1), "strides": (2, 1), "padding": "valid"}),
            *pool,
            LayerSpec("relu"),
            LayerSpec("flatten"),
            LayerSpec("dense", {"units": hidden}),
            LayerSpec("relu"),
            LayerSpec("dense", {"units": num_classes}),
        ),
    )


def image_cnn_spec(
    input_shape: tuple[int, int, int], num_classes: int, *, filters: int = 8, hidden: int = 32
) -> ModelSpec:
    height, width, _channels = input_shape
    if min(height, width) < 8:
        raise ModelError(f"The image CNN needs images of at least 8x8 pixels, got {height}x{width}.")
    return ModelSpec(
        architecture="image_cnn",
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        layers=(
            LayerSpec("conv2d", {"filters": filters, "kernel_size": (3, 3), "strides": (2, 2), "padding": "valid"}),
            # Pooling before the activation: a quarter of the ReLUs, each an SMPC comparison.
            LayerSpec("avg_pool", {"pool_size": (2, 2)}),
            LayerSpec("relu"),
            LayerSpec("flatten"),
            LayerSpec("dense", {"units": hidden}),
            LayerSpec("relu"),
            LayerSpec("dense", {"units": num_classes}),
        ),
    )


def spec_for(dataset: Dataset, architecture: str | None = None) -> ModelSpec:
    """The default architecture for a dataset's kind, or the one asked for if it fits."""
    wanted = architecture or ("tabular_cnn" if dataset.kind is DataKind.TABLE else "image_cnn")
    if wanted == "tabular_cnn":
        if dataset.kind is not DataKind.TABLE:
            raise ModelError("The tabular CNN needs a table dataset.")
        return tabular_cnn_spec(dataset.input_shape[0], dataset.num_classes)
    if wanted == "image_cnn":
        if dataset.kind is not DataKind.IMAGE:
            raise ModelError("The image CNN needs an image dataset.")
        h, w, c = dataset.input_shape
        return image_cnn_spec((h, w, c), dataset.num_classes)
    raise ModelError(f"Unknown architecture '{wanted}'; choose one of {', '.join(ARCHITECTURES)}.")

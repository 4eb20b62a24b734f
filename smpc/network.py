"""The federation's CNN rebuilt from its `ModelSpec` out of tf-encrypted's Keras layers.

Keras 3 models do not pass through tf-encrypted's converter, so the same `LayerSpec`s that
`core.models.keras_builder` turns into Keras layers are turned here into `tfe.keras` layers;
their private weight variables are then overwritten with held shares, in Keras'
`get_weights()` order (kernel, bias per layer).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.models.architecture import LayerSpec, ModelSpec
from smpc.compat import tfe
from smpc.errors import ProtocolUnsupported


class ColumnConv2D(tfe.keras.engine.Layer):  # type: ignore[name-defined]
    """A k x 1 convolution over a (length, 1, channels) map, the tabular CNN's layer.

    tf-encrypted's Conv2D takes square kernels and equal strides only; a column convolution is
    a gather of k-row windows (share-local, public indices) followed by one private matmul.
    """

    def __init__(self, filters: int, kernel_height: int, stride: int) -> None:
        super().__init__()
        self.filters = filters
        self.kernel_height = kernel_height
        self.stride = stride

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[3])
        self.kernel = self.add_weight(np.zeros((self.kernel_height, 1, channels, self.filters)))
        self.bias = self.add_weight(np.zeros((self.filters,)))
        self.built = True

    def call(self, inputs: Any) -> Any:
        batch, height, width, channels = (int(d) for d in inputs.shape)
        out_h = (height - self.kernel_height) // self.stride + 1
        rows = (np.arange(out_h)[:, None] * self.stride + np.arange(self.kernel_height)[None, :]).ravel()
        patches = tfe.gather(inputs, rows.tolist(), axis=1)  # (B, out_h * k, 1, C)
        patches = tfe.reshape(patches, [batch * out_h, self.kernel_height * width * channels])
        kernel = tfe.reshape(self.kernel.read_value(), [self.kernel_height * channels, self.filters])
        out = tfe.matmul(patches, kernel) + self.bias.read_value()
        return tfe.reshape(out, [batch, out_h, 1, self.filters])


def _conv_layer(p: dict[str, Any], input_shape: tuple[int, ...]) -> Any:
    kh, kw = (int(v) for v in p["kernel_size"])
    sh, sw = (int(v) for v in p["strides"])
    if kh == kw and sh == sw:
        return tfe.keras.layers.Conv2D(p["filters"], (kh, kw), strides=(sh, sw), padding=p["padding"])
    if kw == 1 and input_shape[2] == 1 and p["padding"] == "valid":
        return ColumnConv2D(p["filters"], kh, sh)
    raise ProtocolUnsupported(
        f"A {kh}x{kw} convolution with strides {sh}x{sw} cannot be evaluated under SMPC "
        "(tf-encrypted supports square kernels with equal strides, and k x 1 columns)."
    )


def _tfe_layer(layer: LayerSpec, input_shape: tuple[int, ...]) -> Any:
    p = layer.params
    layers = tfe.keras.layers
    if layer.kind == "reshape":
        return layers.Reshape(tuple(p["target_shape"]))
    if layer.kind == "conv2d":
        return _conv_layer(p, input_shape)
    if layer.kind == "relu":
        return layers.ReLU()
    if layer.kind == "avg_pool":
        return layers.AveragePooling2D(tuple(p["pool_size"]))
    if layer.kind == "flatten":
        return layers.Flatten()
    if layer.kind == "dense":
        return layers.Dense(p["units"])
    raise ProtocolUnsupported(f"Layer kind '{layer.kind}' cannot be evaluated under SMPC.")


class PrivateNetwork:
    """The layers of one `ModelSpec`, applied to a private batch; weights live in the layers."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.layers: list[Any] = []

    def __call__(self, x: Any) -> Any:
        """Creates the layers (shapes known only here) and applies them; call once per graph."""
        for spec_layer in self.spec.layers:
            layer = _tfe_layer(spec_layer, tuple(int(d) for d in x.shape))
            self.layers.append(layer)
            x = layer(x)
        return x

    @property
    def weight_variables(self) -> list[Any]:
        """The private variables in Keras `get_weights()` order; valid after the first call."""
        return [w for layer in self.layers for w in layer.weights]

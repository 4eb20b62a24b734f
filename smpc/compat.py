"""Makes tf-encrypted 0.9.1 import and compute soundly on the pinned TensorFlow 2.21.

The only module that knows about the gaps between the two; the rest of `smpc` imports
`tf_encrypted` through `from smpc.compat import tfe`. Patched at import time:

- `tensorflow.python.ops.while_v2`: `glob_stateful_parallelism` and the `stateful_parallelism`
  argument of `_build_while_op` are gone since TF 2.13 (ABY3 imports both);
- `tf.Dimension` is gone from the TF 2 namespace (Pond's average pooling uses it);
- `onnx.mapping` is gone since onnx 1.19 (the converter imports it);
- the custom ops (`secure_random`, `aux`, `tf_i128`, `dataset`) are built for TF 2.9.1 only.
  Without `secure_random` tf-encrypted falls back to `tf.random.uniform`, whose CPU kernel is
  seeded from a 32-bit `std::random_device` draw: not a cryptographic source. We replace it by
  `_SecureRandomOps`: every seed comes from a stateful Philox-4x32-10 generator whose 192-bit
  state is drawn from `secrets` (the OS CSPRNG) on the machine that runs that device, and every
  mask is expanded from such a seed by TF's stateless Philox. See docs/smpc.md.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import types
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import while_v2

from smpc.errors import CompatibilityError

logger = logging.getLogger(__name__)

RNG_STATE_PREFIX = "medfedchain_rng_state"
# Philox in TF's stateful RNG: state = [counter_lo, counter_hi, key], all int64.
_PHILOX = 1
_STATE_SIZE = 3


def _patch_tensorflow() -> None:
    if not hasattr(while_v2, "glob_stateful_parallelism"):
        while_v2.glob_stateful_parallelism = False  # type: ignore[attr-defined]
        original = while_v2._build_while_op

        def build_while_op(*args: Any, stateful_parallelism: Any = None, **kwargs: Any) -> Any:
            return original(*args, **kwargs)

        while_v2._build_while_op = build_while_op
    if not hasattr(tf, "Dimension"):
        tf.Dimension = tf.compat.v1.Dimension  # type: ignore[attr-defined]


def _patch_onnx() -> None:
    onnx: Any
    try:
        import onnx
    except ImportError:  # the converter is never used by smpc; give it an empty mapping
        onnx = None
    try:
        import onnx.mapping

        return
    except ImportError:
        pass
    shim = types.ModuleType("onnx.mapping")
    table: dict[int, Any] = {}
    if onnx is not None:
        for value in onnx.TensorProto.DataType.values():
            try:
                table[value] = onnx.helper.tensor_dtype_to_np_dtype(value)
            except (KeyError, ValueError, TypeError):
                continue
    shim.TENSOR_TYPE_TO_NP_TYPE = table  # type: ignore[attr-defined]
    sys.modules["onnx.mapping"] = shim
    if onnx is not None:
        onnx.mapping = shim  # type: ignore[attr-defined]


def _current_device() -> str:
    """The device the enclosing `tf.device` scopes would give a new op (empty when none)."""
    return tf.raw_ops.NoOp(name="device_probe").device


def rng_state_name(device: str) -> str:
    """Shared name of the per-device generator state; stable across graphs and processes."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in device) or "default"
    return f"{RNG_STATE_PREFIX}_{safe}"


def fresh_rng_state() -> np.ndarray:
    """A Philox state (128-bit counter, 64-bit key) drawn from the OS CSPRNG."""
    return np.frombuffer(secrets.token_bytes(8 * _STATE_SIZE), dtype=np.int64).copy()


def rng_state_handle(device: str) -> tf.Tensor:
    """The resource handle of `device`'s generator state, in the current graph."""
    with tf.device(device or None):
        return tf.raw_ops.VarHandleOp(
            dtype=tf.int64, shape=[_STATE_SIZE], shared_name=rng_state_name(device), container=""
        )


class _SecureRandomOps:
    """Stands in for tf-encrypted's libsodium `secure_random` custom op on any TF version.

    `secure_seed` draws 128 fresh bits from the device's Philox generator (its state lives in a
    resource variable on that device, initialised from `secrets` by the process that runs the
    device); the samplers expand a seed with TF's stateless Philox, as the original expanded it
    with ChaCha20.
    """

    def __init__(self) -> None:
        self.devices: set[str] = set()

    def secure_seed(self, name: str | None = None) -> tf.Tensor:
        if tf.executing_eagerly():
            return tf.constant(np.frombuffer(secrets.token_bytes(16), dtype=np.int64))
        device = _current_device()
        self.devices.add(device)
        tf.compat.v1.get_default_graph().add_to_collection(RNG_STATE_PREFIX, device)
        with tf.device(device or None):
            return tf.raw_ops.StatefulUniformFullInt(
                resource=rng_state_handle(device),
                algorithm=tf.constant(_PHILOX, tf.int64),
                shape=tf.constant([2], tf.int64),
                dtype=tf.int64,
                name=name or "secure_seed",
            )

    def secure_seeded_random_uniform(
        self, shape: Any, seed: tf.Tensor, minval: tf.Tensor, maxval: tf.Tensor, name: str | None = None
    ) -> tf.Tensor:
        dtype = minval.dtype
        lo, hi = tf.get_static_value(minval), tf.get_static_value(maxval)
        if lo is not None and hi is not None and int(lo) == dtype.min and int(hi) == dtype.max:
            # tf-encrypted asks for [min, max); the whole ring is what a share must cover.
            return tf.random.stateless_uniform(shape, seed=seed, minval=None, maxval=None, dtype=dtype)
        return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval, dtype=dtype)

    def secure_random_uniform(
        self, shape: Any, minval: tf.Tensor, maxval: tf.Tensor, name: str | None = None
    ) -> tf.Tensor:
        return self.secure_seeded_random_uniform(shape, self.secure_seed(), minval, maxval, name=name)

    def i128_secure_seeded_random_uniform(self, *args: Any, **kwargs: Any) -> tf.Tensor:
        raise CompatibilityError(
            "128-bit tensors need tf-encrypted's custom op, which is not built for this TensorFlow.",
            detail="use the 64-bit fixed-point configurations",
        )

    i128_secure_random_uniform = i128_secure_seeded_random_uniform


SECURE_RANDOM = _SecureRandomOps()


def _import_tfe() -> types.ModuleType:
    _patch_tensorflow()
    _patch_onnx()
    tfe_logger = logging.getLogger("tf_encrypted")
    level = tfe_logger.level
    # The custom-op loaders warn about the TF 2.9.1 binaries; we replace what they would provide.
    tfe_logger.setLevel(logging.CRITICAL)
    try:
        import tf_encrypted
        from tf_encrypted.operations.secure_random import secure_random as secure_random_module
    except Exception as exc:
        raise CompatibilityError(
            "TF-Encrypted could not be loaded on this TensorFlow version.", detail=repr(exc)
        ) from exc
    finally:
        tfe_logger.setLevel(level)
    secure_random_module.secure_random_module = SECURE_RANDOM
    return tf_encrypted


def graph_rng_devices(graph: tf.Graph) -> list[str]:
    """Devices of `graph` whose generator state must be initialised before it runs."""
    return sorted(set(graph.get_collection(RNG_STATE_PREFIX)))


def initialize_rng_states(session: tf.compat.v1.Session, devices: list[str]) -> None:
    """Seeds, from this process's CSPRNG, the generator state of each device not yet seeded.

    In-process this is every device; a player process calls it for its own device only, so no
    other party ever sees a player's seed. The ops go into the session's own graph because an
    in-process session keeps its resources to itself.
    """
    graph = session.graph
    steps = []
    with graph.as_default(), tf.name_scope("rng_setup"):
        for device in devices:
            handle = rng_state_handle(device)
            with tf.device(device or None):
                ready = tf.raw_ops.VarIsInitializedOp(resource=handle)
                value = tf.compat.v1.placeholder(tf.int64, [_STATE_SIZE])
                assign = tf.raw_ops.AssignVariableOp(resource=handle, value=value)
            steps.append((ready, value, assign))
    for ready, value, assign in steps:
        if not session.run(ready):
            session.run(assign, feed_dict={value: fresh_rng_state()})


def uninitialized_rng_devices(target: str, devices: list[str], timeout_ms: int) -> list[str]:
    """Which of `devices` have no generator state yet (their player was not started by us)."""
    graph = tf.Graph()
    with graph.as_default():
        flags = []
        for device in devices:
            with tf.device(device or None):
                flags.append(tf.raw_ops.VarIsInitializedOp(resource=rng_state_handle(device)))
    options = tf.compat.v1.RunOptions(timeout_in_ms=timeout_ms)
    with tf.compat.v1.Session(target, graph=graph, config=session_config()) as sess:
        values = sess.run(flags, options=options)
    return [d for d, ok in zip(devices, values, strict=True) if not ok]


def session_config(*, operation_timeout_ms: int = 0) -> tf.compat.v1.ConfigProto:
    """Session settings that keep an SMPC graph's memory bounded on a small machine."""
    config = tf.compat.v1.ConfigProto(
        inter_op_parallelism_threads=1,
        intra_op_parallelism_threads=max(1, min(4, os.cpu_count() or 1)),
        allow_soft_placement=False,
    )
    if operation_timeout_ms:
        config.operation_timeout_in_ms = operation_timeout_ms
    return config


tfe = _import_tfe()

__all__ = [
    "SECURE_RANDOM",
    "fresh_rng_state",
    "graph_rng_devices",
    "initialize_rng_states",
    "rng_state_handle",
    "session_config",
    "tfe",
    "uninitialized_rng_devices",
]

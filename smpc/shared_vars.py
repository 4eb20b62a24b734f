"""Player-held values addressed by name: one resource variable per (name, device).

The driver's graph and a player's own graph name the same resource (`VarHandleOp` with the same
shared name on the same device), so a player assigns what its owners sent it and the driver's
graph computes on it without the value ever passing through the driver. A resource is created
by its first assignment, so whichever side writes first needs no separate initialiser.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

PREFIX = "mfc"


def slot_name(slot: int, holder: int, tensor: int) -> str:
    return f"{PREFIX}/slot{slot}/{holder}/{tensor}"


def global_name(holder: int, tensor: int) -> str:
    return f"{PREFIX}/global/{holder}/{tensor}"


def input_name(kind: str, holder: int) -> str:
    """kind: x, w, a, y, yfix (stacked batches) or ref (per group)."""
    return f"{PREFIX}/in/{kind}/{holder}"


def result_name(holder: int) -> str:
    return f"{PREFIX}/res/{holder}"


def accumulator_name(holder: int) -> str:
    return f"{PREFIX}/acc/{holder}"


def handle(name: str, shape: Sequence[int | None] | None = None) -> tf.Tensor:
    """The handle of resource `name` on the current device; `shape` None = unknown rank."""
    return tf.raw_ops.VarHandleOp(
        dtype=tf.int64,
        shape=tf.TensorShape(None if shape is None else list(shape)),
        shared_name=name,
        container="",
        name=name.replace("/", "_"),
    )


def read(name: str, shape: Sequence[int | None] | None = None) -> tf.Tensor:
    return tf.raw_ops.ReadVariableOp(resource=handle(name, shape), dtype=tf.int64)


def assign(name: str, value: tf.Tensor) -> tf.Operation:
    return tf.raw_ops.AssignVariableOp(resource=handle(name), value=value, validate_shape=False)


class VariableAccess:
    """Assigns and reads a holder's named resources through one session on its own device.

    A player process uses its own graph and a session on its own server; the in-process players
    of a simulation use the driver's graph and session (`graph`, `run` given)."""

    def __init__(self, device: str, graph: tf.Graph, run: Callable[..., Any], lock: threading.RLock) -> None:
        self.device = device
        self.graph = graph
        self._run = run
        self._lock = lock
        self._assigns: dict[str, tuple[tf.Tensor, tf.Operation]] = {}
        self._reads: dict[str, tf.Tensor] = {}

    def assign(self, values: dict[str, np.ndarray]) -> None:
        """Writes every named value in one run."""
        with self._lock:
            feed, ops = {}, []
            for name, value in values.items():
                if name not in self._assigns:
                    with self.graph.as_default(), tf.device(self.device):
                        ph = tf.compat.v1.placeholder(tf.int64, None, name=f"put_{name.replace('/', '_')}")
                        self._assigns[name] = (ph, assign(name, ph))
                ph, op = self._assigns[name]
                feed[ph] = np.ascontiguousarray(value, np.int64)
                ops.append(op)
            if ops:
                self._run(ops, feed)

    def read(self, names: Sequence[str]) -> list[np.ndarray]:
        with self._lock:
            fetches = []
            for name in names:
                if name not in self._reads:
                    with self.graph.as_default(), tf.device(self.device):
                        self._reads[name] = read(name)
                fetches.append(self._reads[name])
            return [np.asarray(v) for v in self._run(fetches, None)] if fetches else []

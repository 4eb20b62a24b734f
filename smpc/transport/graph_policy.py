"""Which graph partitions a player's gateway lets through to its TensorFlow worker.

TensorFlow's worker runs whatever partition its master registers. A policy sees the GraphDef
of every RegisterGraph call (decoded from the wire, because TensorFlow's Python package ships
no worker_pb2) and raises GraphRefused to stop it before the worker does. Digests of accepted
partitions are canonical so the players can later agree on them (not enforced here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import tensorflow_server_pb2

from smpc.errors import GraphRefused

if TYPE_CHECKING:
    import tensorflow as tf

GraphPolicy = Callable[[graph_pb2.GraphDef], None]

# Ops through which a graph reaches the host: files, checkpoints, Python callbacks, memory-mapped
# constants, proto descriptors loaded from a path, debug/summary/print sinks that take file URLs.
DENIED_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "ShardedFilename", "ShardedFilespec",
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
    "PyFunc", "PyFuncStateless", "EagerPyFunc", "ImmutableConst", "DecodeProtoV2", "EncodeProto",
    "Print", "PrintV2", "LoadAndRemapMatrix", "GenerateVocabRemap",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
    "RemoteCall",  # runs a function on any device string it is given
    "Copy", "CopyHost",  # carry debug-op specs that may name file:// sinks
})
# Families matched by substring, so new versions (FooV3) stay refused without a code change.
DENIED_FRAGMENTS = (
    "Reader", "Dataset", "Iterator", "Summary", "Debug", "File", "Checkpoint", "PyFunc",
    "Save", "Restore",
)  # not "Snapshot": that op only copies a tensor; SnapshotDataset* match "Dataset"
# Ops TensorFlow adds when it partitions a graph across devices or runs a step on a worker.
PARTITION_OPS = frozenset({
    "_Send", "_Recv", "_HostSend", "_HostRecv", "NoOp", "Identity", "Const", "_Arg", "_Retval",
})

_REGISTER_GRAPH_DEF_FIELD = 2  # tensorflow.RegisterGraphRequest.graph_def


def is_denied(op_type: str) -> bool:
    return op_type in DENIED_OPS or any(fragment in op_type for fragment in DENIED_FRAGMENTS)


def graph_op_types(graph_def: graph_pb2.GraphDef) -> frozenset[str]:
    """Op types of the graph's nodes and of every function in its library (which a call node
    would otherwise hide); a call of a library function appears as an op named after it."""
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types.update(node.op for node in function.node_def)
    return frozenset(types)


def protocol_op_types(graph: tf.Graph) -> frozenset[str]:
    """The op types of a built protocol graph plus those partitioning adds: an allow list."""
    return graph_op_types(graph.as_graph_def()) | PARTITION_OPS


class OpAllowList:
    """Accepts a partition made only of allowed op types; never one with a denied op."""

    def __init__(self, op_types: Iterable[str]) -> None:
        self.op_types = frozenset(op_types)

    def __call__(self, graph_def: graph_pb2.GraphDef) -> None:
        types = graph_op_types(graph_def)
        denied = frozenset(t for t in types if is_denied(t))
        if denied:
            raise GraphRefused(
                "The SMPC player refused a graph that can reach its host (files, Python or "
                "checkpoints).",
                op_types=denied,
            )
        outside = types - self.op_types
        if outside:
            raise GraphRefused("The SMPC player refused a graph that is not part of the protocol.",
                               op_types=outside)


def deny_only(graph_def: graph_pb2.GraphDef) -> None:
    """The weakest policy: only the host-reaching ops are refused."""
    denied = frozenset(t for t in graph_op_types(graph_def) if is_denied(t))
    if denied:
        raise GraphRefused("The SMPC player refused a graph that can reach its host.", op_types=denied)


def partition_digest(graph_def: graph_pb2.GraphDef) -> str:
    """SHA-256 of the partition with its nodes in name order, deterministically serialized."""
    canonical = graph_pb2.GraphDef()
    canonical.CopyFrom(graph_def)
    nodes = sorted(canonical.node, key=lambda n: n.name)
    del canonical.node[:]
    canonical.node.extend(nodes)
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _length_delimited(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, payload) of each length-delimited field; other wire types are skipped."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            yield number, data[pos : pos + length]
            pos += length
        else:  # groups: no TensorFlow request uses them; refuse rather than guess
            raise ValueError(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise ValueError("truncated field")


def register_graph_def(request: bytes) -> graph_pb2.GraphDef:
    """The GraphDef a serialized RegisterGraphRequest carries.

    Protobuf merges repeated occurrences of a message field, so all of them are concatenated
    (what the worker's own parser sees), not just the first.
    """
    try:
        payload = b"".join(v for n, v in _length_delimited(request) if n == _REGISTER_GRAPH_DEF_FIELD)
        graph_def = graph_pb2.GraphDef()
        graph_def.ParseFromString(payload)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a refusal
        raise GraphRefused("The SMPC player refused a malformed graph registration.") from exc
    return graph_def


_CREATE_WORKER_SESSION_SERVER_DEF_FIELD = 2  # tensorflow.CreateWorkerSessionRequest.server_def


def worker_session_server_def(request: bytes) -> tensorflow_server_pb2.ServerDef:
    """The ServerDef of a serialized CreateWorkerSessionRequest (merged as protobuf would)."""
    try:
        payload = b"".join(
            v for n, v in _length_delimited(request) if n == _CREATE_WORKER_SESSION_SERVER_DEF_FIELD
        )
        server_def = tensorflow_server_pb2.ServerDef()
        server_def.ParseFromString(payload)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a refusal
        raise GraphRefused("The SMPC player refused a malformed session request.") from exc
    return server_def


def refuse_cluster_propagation(server_def: tensorflow_server_pb2.ServerDef) -> None:
    """A session request carrying a cluster (ClusterSpec propagation) would make the worker
    dial the addresses it names, bypassing this party's pinned outbound links."""
    if server_def.cluster.job:
        raise GraphRefused(
            "The SMPC player refused a session that names its own cluster addresses "
            "(ClusterSpec propagation); players only reach peers through their gateways.",
            op_types=frozenset(),
        )

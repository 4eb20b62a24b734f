"""One federation's SMPC session: the players, the compiled graphs and the shares they hold.

The verifier and the aggregator of a federation share one `SmpcSession`, so what is aggregated
is read from the very share variables that were verified. Every graph is built once per model
shape (weights and data enter through placeholders and variables) and reused across candidates
and rounds; players are either devices of this process (embedded default) or remote
`tf.distribute.Server`s reached through a cluster in which this process is the "driver" task.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from core.models.architecture import ModelSpec
from core.models.weights import Weights
from core.progress import CancelToken
from core.settings import SMPC_PROTOCOLS
from smpc.compat import graph_rng_devices, initialize_rng_states, session_config, tfe
from smpc import shared_vars as names
from smpc.errors import GraphRefused, PlayerUnavailable, ProtocolUnsupported, SmpcError
from smpc.fixedpoint import FixedPointFormat, share
from smpc.layout import RoundLayout
from smpc.shared_vars import VariableAccess
from smpc.network import PrivateNetwork
from smpc.players import DRIVER, LOCAL_JOB, ROLES, PlayerConfig

logger = logging.getLogger(__name__)


# tf-encrypted's fixed64 layout (base 3, |x| < 3^7 = 2187) with 9 instead of 8 fractional
# digits: 3x finer (5.1e-5); the truncation mask then takes ceil(log2 3^25) + 1 + 20 = 61 bits,
# the most that fits below 2^63 (10 digits would need 64).
FIXED = FixedPointFormat(base=3, fractional=9, integral=7)

# tf-encrypted's protocol and config are process-wide; building graphs takes this lock.
_BUILD_LOCK = threading.RLock()
_DRIVER_SERVERS: dict[str, Any] = {}

_PLAYER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


def _close_bounded(sess: tf.compat.v1.Session, *, timeout_s: float) -> None:
    """Closes a session without letting an unreachable player block the caller."""

    def close() -> None:
        with contextlib.suppress(Exception):
            sess.close()

    closer = threading.Thread(target=close, name="smpc-session-close", daemon=True)
    closer.start()
    closer.join(timeout_s)


def _tfe_fixedpoint(fmt: FixedPointFormat) -> Any:
    from tf_encrypted.tensor.fixed import FixedpointConfig

    return FixedpointConfig(
        scaling_base=fmt.base,
        nbits=fmt.ring_bits,
        precision_integral=fmt.integral,
        precision_fractional=fmt.fractional,
        matmul_threshold=256,
        truncation_gap=20,
        use_noninteractive_truncation=False,
    )


class SmpcSession:
    """Players, graphs and held shares of one federation (one model architecture)."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        protocol: str = "securenn",
        players: PlayerConfig | None = None,
        batch_size: int = 64,
        validator_capacity: int = 8,
        timeout_s: float = 120.0,
        fmt: FixedPointFormat = FIXED,
    ) -> None:
        if protocol not in SMPC_PROTOCOLS:
            raise SmpcError(f"Unknown SMPC protocol '{protocol}'; choose one of {', '.join(SMPC_PROTOCOLS)}.")
        if protocol != "securenn":
            raise ProtocolUnsupported(
                f"The {protocol} protocol cannot score candidates exactly: "
                + (
                    "Pond has no secure comparison and approximates ReLU by a polynomial."
                    if protocol == "pond"
                    else "tf-encrypted's ABY3 uses replicated three-party shares, which the "
                    "held-share commitments do not cover yet."
                ),
            )
        if batch_size < 1 or validator_capacity < 1:
            raise SmpcError("The SMPC batch size and validator capacity must be positive.")
        self.spec = spec
        self.protocol = protocol
        self.players = players
        self.batch_size = batch_size
        self.capacity = validator_capacity
        self.timeout_s = timeout_s
        self.fmt = fmt
        self._lock = threading.RLock()
        self._graph: tf.Graph | None = None
        self._sess: tf.compat.v1.Session | None = None
        self._slots: list[_SlotPrograms] = []
        self._shapes: list[tuple[int, ...]] = []
        self._connect_ops: list[tf.Tensor] | None = None
        self._global_assign: tuple[list[tuple[tf.Tensor, tf.Tensor]], tf.Operation] | None = None
        self.fetched: list[str] = []  # names of every tensor this driver fetched: none, by design

    # ---------------------------------------------------------------- lifecycle

    @property
    def player_names(self) -> tuple[str, ...]:
        return tuple(self.players.names) if self.players else ROLES

    @property
    def is_remote(self) -> bool:
        return self.players is not None

    def open(self, weight_shapes: Sequence[tuple[int, ...]]) -> None:
        """Builds the graphs (once) and connects to the players (again after a failure)."""
        with self._lock:
            if self._graph is None:
                self._shapes = [tuple(s) for s in weight_shapes]
                self._build()
            elif [tuple(s) for s in weight_shapes] != self._shapes:
                raise SmpcError("The model does not match the architecture this SMPC session was built for.")
            if self._sess is None:
                self._connect()

    def close(self) -> None:
        with self._lock:
            if self._sess is not None:
                _close_bounded(self._sess, timeout_s=5.0)
            self._sess = None

    def _target(self) -> str:
        if self.players is None:
            return ""
        self.players.probe(min(self.timeout_s, 10.0))
        key = repr(self.players.to_dict())
        server = _DRIVER_SERVERS.get(key)
        if server is None:
            server = tf.distribute.Server(
                self.players.cluster_def(),
                job_name=self.players.job,
                task_index=self.players.task_index(DRIVER),
                config=session_config(),
                start=True,
            )
            _DRIVER_SERVERS[key] = server
        return server.target

    def _connect(self) -> None:
        assert self._graph is not None
        target = self._target()
        config = session_config()
        if self.players is not None:
            # The players' gateways accept the graphs this session built, not grappler's rewrites.
            config.graph_options.rewrite_options.disable_meta_optimizer = True
        sess = tf.compat.v1.Session(target, graph=self._graph, config=config)
        try:
            own = [d for d in graph_rng_devices(self._graph) if not self._is_player_device(d)]
            flags = self._connect_programs()
            with self._translate_errors("connecting"):
                initialize_rng_states(sess, own)
                if flags:
                    self._require_player_rng(sess.run(flags, options=self._options()))
                # The network's weight variables are never initialised: loading a candidate
                # assigns them first. Their initialisers would have the driver share the initial
                # (zero) weights to the players, a link from the driver that nothing else needs.
        except BaseException:
            sess.close()
            raise
        self._sess = sess

    def _connect_programs(self) -> list[tf.Tensor]:
        """Built once, so the graphs a player is sent are the protocol's own (see protocol_graph)."""
        if self._connect_ops is None:
            from smpc.compat import rng_state_handle

            assert self._graph is not None
            with self._graph.as_default():
                flags = []
                if self.players is not None:
                    for name in self.players.names:
                        device = self.players.device(name)
                        with tf.device(device):
                            flags.append(tf.raw_ops.VarIsInitializedOp(resource=rng_state_handle(device)))
            self._connect_ops = flags
        return self._connect_ops

    def _is_player_device(self, device: str) -> bool:
        if self.players is None:
            return False
        return any(device == self.players.device(name) for name in self.players.names)

    def _require_player_rng(self, ready: Sequence[bool]) -> None:
        """A remote player seeds its own generator at start-up; refuse one that did not."""
        assert self.players is not None
        missing = [n for n, ok in zip(self.players.names, ready, strict=True) if not ok]
        if missing:
            raise PlayerUnavailable(
                f"SMPC player(s) {', '.join(missing)} were not started with 'smpc-player' and have no "
                "secure random generator; restart them with the MedFedChain player command.",
                player=missing[0],
            )

    def _options(self) -> tf.compat.v1.RunOptions:
        return tf.compat.v1.RunOptions(timeout_in_ms=int(self.timeout_s * 1000))

    @contextlib.contextmanager
    def _translate_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except _PLAYER_ERRORS as exc:
            self._drop_connection()
            raise PlayerUnavailable(
                f"An SMPC player stopped answering while {what}; the round cannot continue. "
                "Check that all player processes run, then retry.",
                detail=f"{type(exc).__name__}: {exc.message.splitlines()[0] if exc.message else ''}",
            ) from exc
        except tf.errors.PermissionDeniedError as exc:
            # A player's gateway refused what this driver sent it: say which player and why.
            lines = [ln.strip() for ln in (exc.message or "").splitlines() if "MedFedChain gateway" in ln]
            raise GraphRefused(
                f"An SMPC player refused the driver's request while {what}: "
                + (lines[0] if lines else "permission denied"),
            ) from exc
        except tf.errors.InternalError as exc:
            if "connect" in str(exc).lower() or "socket" in str(exc).lower():
                self._drop_connection()
                raise PlayerUnavailable(
                    f"An SMPC player could not be reached while {what}.", detail=str(exc).splitlines()[0]
                ) from exc
            raise

    def _drop_connection(self) -> None:
        """After a player failure nothing it held can be trusted: forget shares, reconnect later."""
        if self._sess is not None:
            # A remote session's close waits for every worker, the dead one included.
            _close_bounded(self._sess, timeout_s=0.0)
        self._sess = None

    def run(self, fetches: Any, feed: dict | None = None, *, what: str = "computing") -> Any:
        return self._run(fetches, feed, what=what, record=True)

    def _run(self, fetches: Any, feed: dict | None, *, what: str, record: bool) -> Any:
        with self._lock:
            if self._sess is None:
                self._connect()
            assert self._sess is not None
            if record:
                # What the driver receives, kept so a test can show it is public results only.
                self.fetched.extend(t.name for t in tf.nest.flatten(fetches) if isinstance(t, tf.Tensor))
            with self._translate_errors(what):
                return self._sess.run(fetches, feed_dict=feed, options=self._options())

    # ---------------------------------------------------------------- graph

    @contextlib.contextmanager
    def _building(self) -> Iterator[None]:
        assert self._graph is not None
        # tf-encrypted leaves some ops unplaced (it shares public constants, such as the edge
        # cases of SecureNN's private compare, on the "default" device): they go to the helper
        # player, so no program ever needs a link from a player to the driver, which listens on
        # nothing but loopback.
        with _BUILD_LOCK, self._graph.as_default(), tf.device(self.prot.server_2.device_name):
            tfe.set_config(self._tfe_config)
            tfe.set_protocol(self.prot)
            try:
                yield
            finally:
                tfe.set_protocol(None)

    def _make_protocol(self) -> Any:
        if self.players is None:
            config = tfe.LocalConfig(list(ROLES), job_name=LOCAL_JOB)
        else:
            config = tfe.RemoteConfig(self.players.hostmap(), job_name=self.players.job)
        tfe.set_config(config)
        self._tfe_config = config
        names = self.player_names
        return tfe.protocol.SecureNN(
            server_0=config.get_player(names[0]),
            server_1=config.get_player(names[1]),
            server_2=config.get_player(names[2]),
            fixedpoint_config=_tfe_fixedpoint(self.fmt),
        )

    def private(self, t0: tf.Tensor, t1: tf.Tensor, scaled: bool) -> Any:
        """A private tensor from two share tensors already placed on the share holders."""
        factory = self.prot.tensor_factory
        return tfe.protocol.pond.PondPrivateTensor(self.prot, factory.tensor(t0), factory.tensor(t1), scaled)

    def _placeholder_pair(self, shape: Sequence[int], name: str) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.device(self.prot.server_0.device_name):
            p0 = tf.compat.v1.placeholder(tf.int64, list(shape), name=f"{name}0")
        with tf.device(self.prot.server_1.device_name):
            p1 = tf.compat.v1.placeholder(tf.int64, list(shape), name=f"{name}1")
        return p0, p1

    def _local(self, fn: Any, *tensors: Any) -> Any:
        """Applies a share-wise linear map (slice, reshape, tile, ...) to private tensors."""
        with tf.device(self.prot.server_0.device_name):
            t0 = fn(*[t.share0.value for t in tensors])
        with tf.device(self.prot.server_1.device_name):
            t1 = fn(*[t.share1.value for t in tensors])
        return self.private(t0, t1, tensors[0].is_scaled)

    def _build(self) -> None:
        self._graph = tf.Graph()
        with _BUILD_LOCK, self._graph.as_default():
            self.prot = self._make_protocol()
        with self._building():
            self._build_scoring()

    @property
    def holders(self) -> tuple[str, str]:
        """Device names of the two share holders (server0, server1)."""
        return self.prot.server_0.device_name, self.prot.server_1.device_name

    def _public_pair(self, dtype: Any, shape: Sequence[int], name: str) -> tuple[tf.Tensor, tf.Tensor]:
        """The same public value fed to each share holder, so no op runs on the driver."""
        pair = []
        for p, device in enumerate(self.holders):
            with tf.device(device):
                pair.append(tf.compat.v1.placeholder(dtype, list(shape), name=f"{name}{p}"))
        return pair[0], pair[1]

    def _named_private(self, make: Callable[[int], tf.Tensor], scaled: bool) -> Any:
        """A private tensor whose share p is `make(p)`, built on share holder p."""
        parts = []
        for p, device in enumerate(self.holders):
            with tf.device(device):
                parts.append(make(p))
        return self.private(parts[0], parts[1], scaled)

    def _build_scoring(self) -> None:
        prot, spec = self.prot, self.spec
        b, c, k = self.batch_size, self.capacity, spec.num_classes
        self.param_count = int(sum(np.prod(s) for s in self._shapes))
        self.batch_index = self._public_pair(tf.int32, [], "batch")
        self.group_index = self._public_pair(tf.int32, [], "group")
        self.result_row = self._public_pair(tf.int32, [], "row")

        def batch_of(kind: str, inner: list[int]) -> Callable[[int], tf.Tensor]:
            # One batch of the stacked inputs the holder assembled from its owners' shares.
            return lambda p: tf.reshape(
                tf.gather(names.read(names.input_name(kind, p), [None, *inner]), self.batch_index[p]), inner
            )

        x = self._named_private(batch_of("x", [b, *spec.input_shape]), True)
        self.net = PrivateNetwork(spec)
        logits = self.net(x)
        # tf-encrypted keeps Conv2D biases as (filters, 1, 1); sizes must agree, shapes may not.
        sizes = [int(np.prod(v.shape.as_list())) for v in self.net.weight_variables]
        if sizes != [int(np.prod(s)) for s in self._shapes]:
            raise SmpcError(
                "The SMPC network does not match the Keras model's weights.",
                detail=f"{[v.shape.as_list() for v in self.net.weight_variables]} vs {self._shapes}",
            )
        # Signed label (k = 2) or membership (k > 2) per validator column, transposed: (C, B).
        w = self._named_private(batch_of("w", [c, b]), False)
        if k == 2:
            diff = self._local(lambda t: t[:, 1:2] - t[:, 0:1], logits)  # (B, 1)
            hits = prot.greater(diff, 0.0)
        else:
            y_int = self._named_private(batch_of("y", [b, k]), False)  # one-hot, unscaled
            y_fix = self._named_private(batch_of("yfix", [b, k]), True)  # one-hot, scaled
            true_logit = prot.reduce_sum(prot.mul(y_int, logits), axis=1, keepdims=True)
            # Correct iff the true class's logit beats every other; the +1 on the true column
            # makes its own comparison pass.
            margins = prot.add(prot.sub(true_logit, logits), y_fix)
            bits = prot.greater(margins, 0.0)
            hits = self._local(lambda t: t[:, 0:1], bits)
            for j in range(1, k):
                hits = prot.mul(hits, self._local(lambda t, j=j: t[:, j : j + 1], bits))
        counts = prot.matmul(w, hits)  # (C, 1), unscaled: no truncation
        # Margin sums: per validator, sum over its rows of (k-1) * true logit - other logits, with
        # integer coefficients so the product needs no truncation.
        coeffs = self._named_private(batch_of("a", [c, b * k]), False)
        flat_logits = self._local(lambda t: tf.reshape(t, [b * k, 1]), logits)
        margin_sums = prot.matmul(coeffs, flat_logits)  # (C, 1), scaled
        updates, resets, self._acc_now = [], [], []
        for p, (device, parts) in enumerate(zip(
            self.holders, ((counts.share0, margin_sums.share0), (counts.share1, margin_sums.share1)), strict=True
        )):
            with tf.device(device):
                name = names.accumulator_name(p)
                update = tf.raw_ops.AssignAddVariableOp(
                    resource=names.handle(name, [c, 2]), value=tf.concat([q.value for q in parts], axis=1)
                )
                updates.append(update)
                resets.append(names.assign(name, tf.zeros([c, 2], tf.int64)))
        self.acc_update = tf.group(*updates)
        self.acc_reset = tf.group(*resets)
        self.refs = self._named_private(
            lambda p: tf.reshape(
                tf.gather(names.read(names.input_name("ref", p), [None, c, self.param_count]), self.group_index[p]),
                [c, self.param_count],
            ),
            False,
        )

    def _global_private(self) -> list[Any]:
        return [
            self._named_private(lambda p, i=i, s=s: names.read(names.global_name(p, i), s), True)
            for i, s in enumerate(self._shapes)
        ]

    def _build_slot(self) -> None:
        """Programs of candidate slot `len(self._slots)`: load it (global + update) into the
        network, and publish its scores for one validator group into the holders' results."""
        index = len(self._slots)
        prot, c = self.prot, self.capacity
        with self._building():
            delta = [
                self._named_private(lambda p, i=i, s=s: names.read(names.slot_name(index, p, i), s), True)
                for i, s in enumerate(self._shapes)
            ]
            with tf.name_scope(f"load{index}"):
                ops = []
                for layer_var, g, d in zip(self.net.weight_variables, self._global_private(), delta, strict=True):
                    value = prot.add(g, d)
                    shape = layer_var.shape.as_list()
                    with tf.device(self.holders[0]):
                        ops.append(layer_var.variable0.variable.assign(tf.reshape(value.share0.value, shape)))
                    with tf.device(self.holders[1]):
                        ops.append(layer_var.variable1.variable.assign(tf.reshape(value.share1.value, shape)))
                load = tf.group(*ops)
            with tf.name_scope(f"publish{index}"):
                flat = self._local(lambda *ts: tf.concat([tf.reshape(t, [-1]) for t in ts], axis=0), *delta)
                # Marked unscaled so no product is truncated: the sums stay exact at scale^2 and
                # only the ring (guarded by the norm bound at sharing) limits them.
                flat = self.private(flat.share0.value, flat.share1.value, False)
                tiled = self._local(lambda t: tf.tile(tf.reshape(t, [1, -1]), [c, 1]), flat)
                dots = prot.reduce_sum(prot.mul(self.refs, tiled), axis=1)
                squares = prot.reduce_sum(prot.mul(flat, flat))
                publish = []
                with tf.control_dependencies([self.acc_update]):
                    for p, (device, dot, square) in enumerate(zip(
                        self.holders, (dots.share0, dots.share1), (squares.share0, squares.share1), strict=True
                    )):
                        with tf.device(device):
                            acc = names.read(names.accumulator_name(p), [c, 2])
                            row = tf.concat([
                                acc, tf.reshape(dot.value, [c, 1]), tf.fill([c, 1], tf.reshape(square.value, [])),
                            ], axis=1)
                            publish.append(tf.raw_ops.ResourceScatterUpdate(
                                resource=names.handle(names.result_name(p), [None, c, 4]),
                                indices=tf.reshape(self.result_row[p], [1]),
                                updates=tf.reshape(row, [1, c, 4]),
                            ))
                publish_op = tf.group(*publish)
        self._slots.append(_SlotPrograms(load=load, publish=publish_op))

    def ensure_slots(self, count: int) -> None:
        with self._lock:
            while len(self._slots) < count:
                self._build_slot()

    # ---------------------------------------------------------------- operations

    def holder_access(self, holder: int) -> VariableAccess:
        """Named-variable access for an in-process share holder (the embedded players)."""
        if self.is_remote:
            raise SmpcError("Remote players assign their own variables; the driver cannot.")
        assert self._graph is not None
        return VariableAccess(self.holders[holder], self._graph, self._run_unrecorded, self._lock)

    def _run_unrecorded(self, fetches: Any, feed: dict | None) -> Any:
        return self._run(fetches, feed, what="storing player values", record=False)

    def _global_program(self) -> tuple[list[tuple[tf.Tensor, tf.Tensor]], tf.Operation]:
        with self._lock, self._building():
            if self._global_assign is None:
                feeds, ops = [], []
                for i, shape in enumerate(self._shapes):
                    pair = self._public_pair(tf.int64, shape, f"global{i}_")
                    for p, device in enumerate(self.holders):
                        with tf.device(device):
                            ops.append(names.assign(names.global_name(p, i), pair[p]))
                    feeds.append(pair)
                self._global_assign = (feeds, tf.group(*ops))
        return self._global_assign

    def protocol_graph(self, weight_shapes: Sequence[tuple[int, ...]]) -> tf.Graph:
        """Every program this session runs, built but not connected: what a player compares the
        graphs it is sent with (its gateway's op allow list is made from it)."""
        with self._lock:
            if self._graph is None:
                self._shapes = [tuple(s) for s in weight_shapes]
                self._build()
            self.ensure_slots(1)
            self._global_program()
            self._connect_programs()
            assert self._graph is not None
            return self._graph

    def start_server(self) -> None:
        """Starts this driver's own TensorFlow server (remote players) without connecting yet."""
        self._target()

    def load_global(self, global_weights: Weights) -> None:
        """Shares the (public) global model into the players; candidates are added to it."""
        encoded = [self.fmt.encode(w, what="global model weights") for w in global_weights]
        shares = [share(e) for e in encoded]
        feeds, op = self._global_program()
        feed = {}
        for pair, (s0, s1) in zip(feeds, shares, strict=True):
            feed[pair[0]], feed[pair[1]] = s0, s1
        self.run(op, feed, what="loading the global model")

    def score(self, layout: RoundLayout, cancel: CancelToken | None = None,
              on_candidate: Callable[[int], None] | None = None) -> None:
        """Scores every candidate slot of `layout` on every validator group; each group's scores
        stay with the share holders (their results variable), nothing is fetched. `cancel` is
        checked between batches."""
        self.ensure_slots(len(layout.candidates))
        for s in range(len(layout.candidates)):
            if on_candidate is not None:
                on_candidate(s)
            programs = self._slots[s]
            for g, group in enumerate(layout.groups):
                self.run([programs.load, self.acc_reset] if g == 0 else self.acc_reset, what="loading a candidate")
                for j in range(group.first_batch, group.first_batch + group.batches):
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    feed = {self.batch_index[0]: j, self.batch_index[1]: j,
                            self.group_index[0]: g, self.group_index[1]: g}
                    last = j == group.first_batch + group.batches - 1
                    if last:
                        row = layout.result_row(s, g)
                        feed.update({self.result_row[0]: row, self.result_row[1]: row})
                    self.run(programs.publish if last else self.acc_update, feed, what="scoring")


@dataclass(frozen=True)
class _SlotPrograms:
    load: tf.Operation
    publish: tf.Operation

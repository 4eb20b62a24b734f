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
from smpc.errors import CommitmentMismatch, PlayerUnavailable, ProtocolUnsupported, SmpcError
from smpc.fixedpoint import FixedPointFormat, new_salt, reconstruct, share, share_commitment
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


@dataclass(frozen=True)
class HeldShares:
    """What the players hold for one candidate of one round, and what it was committed to."""

    hospital_id: str
    round_number: int
    slot: int
    salt: bytes
    commitments: tuple[str, ...]


@dataclass(frozen=True)
class CandidateScores:
    """Revealed results for one candidate: per validator the correct count and the dot product
    with the validator's own update, plus the candidate's squared norm."""

    correct: dict[str, int]
    margin_sum: dict[str, float]  # sum over rows of (k-1) * (true logit - mean of the others)
    dot: dict[str, float]
    squared_norm: float


@dataclass(frozen=True)
class ValidatorGroup:
    """Up to `capacity` validators scored together: their ids, what each knows of its own
    correct count without SMPC, the shared own updates, and a fresh sharing of each batch."""

    ids: list[str]
    base_counts: dict[str, int]
    ref_feed: dict
    batch_feeds: Callable[[], Iterator[dict]]


class _Slot:
    """Two share variables per weight tensor (one on each share-holding player)."""

    def __init__(self, sess: SmpcSession, name: str, shapes: Sequence[tuple[int, ...]]) -> None:
        prot, factory = sess.prot, sess.prot.tensor_factory
        self.vars0: list[Any] = []
        self.vars1: list[Any] = []
        self.feeds0: list[tf.Tensor] = []
        self.feeds1: list[tf.Tensor] = []
        assigns = []
        with tf.name_scope(name):
            for i, shape in enumerate(shapes):
                for device, vars_, feeds in (
                    (prot.server_0.device_name, self.vars0, self.feeds0),
                    (prot.server_1.device_name, self.vars1, self.feeds1),
                ):
                    with tf.device(device):
                        var = factory.variable(np.zeros(shape, np.int64), encode=False)
                        feed = tf.compat.v1.placeholder(tf.int64, shape, name=f"w{i}")
                        assigns.append(var.variable.assign(feed))
                    vars_.append(var)
                    feeds.append(feed)
        self.assign = tf.group(*assigns)
        self.private = [
            tfe.protocol.pond.PondPrivateVariable(prot, v0, v1, True)
            for v0, v1 in zip(self.vars0, self.vars1, strict=True)
        ]
        self.variables = [v.variable for v in (*self.vars0, *self.vars1)]
        self.load: tf.Operation | None = None  # set once the slot is wired to the network
        self.similarity: list[tf.Tensor] = []

    def feed(self, shares0: Sequence[np.ndarray], shares1: Sequence[np.ndarray]) -> dict:
        out = dict(zip(self.feeds0, shares0, strict=True))
        out.update(zip(self.feeds1, shares1, strict=True))
        return out


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
        self._slots: list[_Slot] = []
        self._held: dict[str, HeldShares] = {}
        self._global_slot: _Slot | None = None
        self._shapes: list[tuple[int, ...]] = []
        self._agg_cache: dict[int, tuple[Any, Any, tf.Tensor]] = {}
        self._dot_cache: dict[int, Any] = {}

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
            self._held.clear()

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
        sess = tf.compat.v1.Session(target, graph=self._graph, config=session_config())
        try:
            own = [d for d in graph_rng_devices(self._graph) if not self._is_player_device(d)]
            with self._translate_errors("connecting"):
                initialize_rng_states(sess, own)
                self._require_player_rng(sess)
                with self._graph.as_default():
                    uninitialized = sess.run(
                        tf.compat.v1.report_uninitialized_variables(), options=self._options()
                    )
                names = {n.decode() for n in uninitialized}
                to_init = [v for v in self._graph.get_collection("variables") if v.op.name in names]
                if to_init:
                    with self._graph.as_default():
                        sess.run(tf.compat.v1.variables_initializer(to_init), options=self._options())
        except BaseException:
            sess.close()
            raise
        self._sess = sess

    def _is_player_device(self, device: str) -> bool:
        if self.players is None:
            return False
        return any(device == self.players.device(name) for name in self.players.names)

    def _require_player_rng(self, sess: tf.compat.v1.Session) -> None:
        """A remote player seeds its own generator at start-up; refuse one that did not."""
        if self.players is None:
            return
        from smpc.compat import rng_state_handle

        devices = [self.players.device(n) for n in self.players.names]
        with self._graph.as_default():  # type: ignore[union-attr]
            flags = []
            for device in devices:
                with tf.device(device):
                    flags.append(tf.raw_ops.VarIsInitializedOp(resource=rng_state_handle(device)))
        ready = sess.run(flags, options=self._options())
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
        self._held.clear()

    def run(self, fetches: Any, feed: dict | None = None, *, what: str = "computing") -> Any:
        with self._lock:
            if self._sess is None:
                self._connect()
            assert self._sess is not None
            if self.players is not None:
                self.players.probe(min(self.timeout_s, 5.0))
            with self._translate_errors(what):
                return self._sess.run(fetches, feed_dict=feed, options=self._options())

    # ---------------------------------------------------------------- graph

    @contextlib.contextmanager
    def _building(self) -> Iterator[None]:
        assert self._graph is not None
        with _BUILD_LOCK, self._graph.as_default():
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

    def _build_scoring(self) -> None:
        prot, spec = self.prot, self.spec
        b, c, k = self.batch_size, self.capacity, spec.num_classes
        self.x_feed = self._placeholder_pair([b, *spec.input_shape], "x")
        x = self.private(*self.x_feed, True)
        self.net = PrivateNetwork(spec)
        logits = self.net(x)
        # tf-encrypted keeps Conv2D biases as (filters, 1, 1); sizes must agree, shapes may not.
        sizes = [int(np.prod(v.shape.as_list())) for v in self.net.weight_variables]
        if sizes != [int(np.prod(s)) for s in self._shapes]:
            raise SmpcError(
                "The SMPC network does not match the Keras model's weights.",
                detail=f"{[v.shape.as_list() for v in self.net.weight_variables]} vs {self._shapes}",
            )
        self._global_slot = _Slot(self, "global", self._shapes)
        # Membership (k > 2) or signed label (k = 2) per validator column, transposed: (C, B).
        self.w_feed = self._placeholder_pair([c, b], "w")
        w = self.private(*self.w_feed, False)
        if k == 2:
            diff = self._local(lambda t: t[:, 1:2] - t[:, 0:1], logits)  # (B, 1)
            hits = prot.greater(diff, 0.0)
        else:
            self.y_feed = self._placeholder_pair([b, k], "y")  # one-hot, unscaled
            self.yfix_feed = self._placeholder_pair([b, k], "yfix")  # one-hot, scaled
            y_int = self.private(*self.y_feed, False)
            y_fix = self.private(*self.yfix_feed, True)
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
        self.a_feed = self._placeholder_pair([c, b * k], "a")
        coeffs = self.private(*self.a_feed, False)
        flat_logits = self._local(lambda t: tf.reshape(t, [b * k, 1]), logits)
        margins = prot.matmul(coeffs, flat_logits)  # (C, 1), scaled
        with tf.name_scope("accumulator"):
            updates, resets, reads = [], [], []
            for device, parts in (
                (prot.server_0.device_name, (counts.share0, margins.share0)),
                (prot.server_1.device_name, (counts.share1, margins.share1)),
            ):
                with tf.device(device):
                    var = tf.Variable(tf.zeros([c, 2], tf.int64), trainable=False, name="acc")
                    updates.append(var.assign_add(tf.concat([p.value for p in parts], axis=1)))
                    resets.append(var.assign(tf.zeros([c, 2], tf.int64)))
                    reads.append(var)
        self.acc_update = tf.group(*updates)
        self.acc_reset = tf.group(*resets)
        # The last batch of a group updates and reveals in one run.
        with tf.control_dependencies([self.acc_update]):
            self.acc_update_read = [tf.identity(v.read_value()) for v in reads]
        self.param_count = int(sum(np.prod(s) for s in self._shapes))
        self.ref_feed = self._placeholder_pair([c, self.param_count], "ref")

    def _build_slot(self) -> _Slot:
        """A new candidate slot with its load (into the network) and similarity programs."""
        assert self._global_slot is not None
        with self._building():
            index = len(self._slots)
            slot = _Slot(self, f"slot{index}", self._shapes)
            prot = self.prot
            with tf.name_scope(f"load{index}"):
                ops = []
                for layer_var, g, d in zip(
                    self.net.weight_variables, self._global_slot.private, slot.private, strict=True
                ):
                    value = prot.add(g.read_value(), d.read_value())
                    shape = layer_var.shape.as_list()
                    with tf.device(prot.server_0.device_name):
                        ops.append(layer_var.variable0.variable.assign(tf.reshape(value.share0.value, shape)))
                    with tf.device(prot.server_1.device_name):
                        ops.append(layer_var.variable1.variable.assign(tf.reshape(value.share1.value, shape)))
                slot.load = tf.group(*ops)
            with tf.name_scope(f"similarity{index}"):
                flat = self._local(
                    lambda *ts: tf.concat([tf.reshape(t, [-1]) for t in ts], axis=0),
                    *[p.read_value() for p in slot.private],
                )
                # Marked unscaled so no product is truncated: the sums stay exact at scale^2 and
                # only the ring (guarded by the norm bound at sharing) limits them.
                flat = self.private(flat.share0.value, flat.share1.value, False)
                refs = self.private(*self.ref_feed, False)
                tiled = self._local(lambda t: tf.tile(tf.reshape(t, [1, -1]), [self.capacity, 1]), flat)
                dots = prot.reduce_sum(prot.mul(refs, tiled), axis=1)
                squares = prot.reduce_sum(prot.mul(flat, flat))
                slot.similarity = [
                    dots.share0.value,
                    dots.share1.value,
                    squares.share0.value,
                    squares.share1.value,
                ]
            init = tf.compat.v1.variables_initializer(slot.variables)
        self._slots.append(slot)
        if self._sess is not None:
            self.run(init, what="preparing a candidate slot")
        return slot

    def _aggregation_program(self, n_slots: int) -> tuple[Any, Any, tf.Tensor]:
        """sum_k n_k * share_k on each share holder; the integer weights n_k are public."""
        if n_slots not in self._agg_cache:
            with self._building(), tf.name_scope(f"aggregate{n_slots}"):
                weights = tf.compat.v1.placeholder(tf.int64, [n_slots], name="sample_counts")
                sums = []
                for device, attr in (
                    (self.prot.server_0.device_name, "vars0"),
                    (self.prot.server_1.device_name, "vars1"),
                ):
                    with tf.device(device):
                        per_tensor = []
                        for i in range(len(self._shapes)):
                            terms = [
                                weights[s] * getattr(self._slots[s], attr)[i].variable.read_value()
                                for s in range(n_slots)
                            ]
                            per_tensor.append(tf.add_n(terms))
                        sums.append(per_tensor)
            self._agg_cache[n_slots] = (sums[0], sums[1], weights)
        return self._agg_cache[n_slots]

    # ---------------------------------------------------------------- operations

    def load_global(self, global_weights: Weights) -> None:
        """Shares the (public) global model into the players; candidates are added to it."""
        assert self._global_slot is not None
        encoded = [self.fmt.encode(w, what="global model weights") for w in global_weights]
        shares = [share(e) for e in encoded]
        self.run(
            self._global_slot.assign,
            self._global_slot.feed([s[0] for s in shares], [s[1] for s in shares]),
            what="loading the global model",
        )

    def hold(self, hospital_id: str, round_number: int, delta: Weights) -> HeldShares:
        """Secret-shares a candidate's update into a slot; returns the commitments to its shares."""
        with self._lock:
            what = f"update of hospital {hospital_id}"
            self.fmt.check_norm(np.concatenate([np.ravel(d) for d in delta]), what=what)
            encoded = [self.fmt.encode(d, what=what) for d in delta]
            shares = [share(e) for e in encoded]
            previous = self._held.get(hospital_id)
            used = {h.slot for h in self._held.values()}
            if previous is not None:
                index = previous.slot
            else:
                free = [i for i in range(len(self._slots)) if i not in used]
                index = free[0] if free else self._build_slot_index()
            slot = self._slots[index]
            self.run(
                slot.assign,
                slot.feed([s[0] for s in shares], [s[1] for s in shares]),
                what="sharing an update",
            )
            salt = new_salt()
            commitments = tuple(
                share_commitment(
                    salt, self._context(hospital_id, round_number, player), [s[p] for s in shares]
                )
                for p, player in enumerate(self.player_names[:2])
            )
            held = HeldShares(hospital_id, round_number, index, salt, commitments)
            self._held[hospital_id] = held
            return held

    def _build_slot_index(self) -> int:
        self._build_slot()
        return len(self._slots) - 1

    @staticmethod
    def _context(hospital_id: str, round_number: int, player: str) -> str:
        return f"round={round_number};hospital={hospital_id};player={player}"

    def held(self, hospital_id: str) -> HeldShares:
        held = self._held.get(hospital_id)
        if held is None:
            raise CommitmentMismatch(
                f"The SMPC players hold no verified update of hospital {hospital_id} "
                "(it was never committed, or a player restarted since).",
                hospital_id=hospital_id,
            )
        return held

    def release(self) -> None:
        with self._lock:
            self._held.clear()

    def score_candidate(
        self, hospital_id: str, groups: Sequence[ValidatorGroup], cancel: CancelToken | None = None
    ) -> CandidateScores:
        """Runs one held candidate on every batch of every validator group: one run to load it,
        one per batch, the last of a group also revealing that group's scores. `cancel` is
        checked between batches."""
        slot = self._slots[self.held(hospital_id).slot]
        correct: dict[str, int] = {}
        margin: dict[str, float] = {}
        dot: dict[str, float] = {}
        squared = 0.0
        for index, group in enumerate(groups):
            self.run(
                [slot.load, self.acc_reset] if index == 0 else self.acc_reset, what="loading a candidate"
            )
            feeds = iter(group.batch_feeds())
            feed = next(feeds)
            for following in feeds:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                self.run(self.acc_update, feed, what="scoring")
                feed = following
            (acc0, acc1), (d0, d1, s0, s1) = self.run(
                [self.acc_update_read, slot.similarity], {**feed, **group.ref_feed}, what="revealing scores"
            )
            acc = reconstruct(acc0, acc1)
            counts, margin_sums = acc[:, 0], self.fmt.decode(acc[:, 1])
            dots = self.fmt.decode(reconstruct(d0, d1)) / self.fmt.scale
            squared = float(self.fmt.decode(reconstruct(s0, s1))) / self.fmt.scale
            for col, validator_id in enumerate(group.ids):
                correct[validator_id] = int(group.base_counts[validator_id] + counts[col])
                margin[validator_id] = float(margin_sums[col])
                dot[validator_id] = float(dots[col])
                self.fmt.check_sum(dot[validator_id], what="update similarity", squared_scale=True)
        self.fmt.check_sum(squared, what="update norm", squared_scale=True)
        return CandidateScores(correct=correct, margin_sum=margin, dot=dot, squared_norm=squared)

    def aggregate(
        self, hospital_ids: Sequence[str], commitments: Sequence[tuple[str, ...]], counts: Sequence[int]
    ) -> list[np.ndarray]:
        """sum_k counts_k * delta_k (decoded), after checking each held share against its commitment,
        in one run so the shares checked are the shares summed."""
        with self._lock:
            held = [self.held(h) for h in hospital_ids]
            n_slots = len(self._slots)
            sums0, sums1, weights = self._aggregation_program(n_slots)
            slot_weights = np.zeros(n_slots, np.int64)
            for h, n in zip(held, counts, strict=True):
                slot_weights[h.slot] = int(n)
            fetch_shares = [(self._slots[h.slot].vars0, self._slots[h.slot].vars1) for h in held]
            fetches = {
                "sums": (sums0, sums1),
                "shares": [([v.variable for v in a], [v.variable for v in b]) for a, b in fetch_shares],
            }
            result = self.run(fetches, {weights: slot_weights}, what="aggregating")
            for h, expected, (shares0, shares1) in zip(held, commitments, result["shares"], strict=True):
                for p, (player, part) in enumerate(
                    zip(self.player_names[:2], (shares0, shares1), strict=True)
                ):
                    actual = share_commitment(
                        h.salt, self._context(h.hospital_id, h.round_number, player), part
                    )
                    if p >= len(expected) or actual != expected[p]:
                        raise CommitmentMismatch(
                            f"The update held for hospital {h.hospital_id} does not match its recorded "
                            "commitment; it will not be aggregated.",
                            hospital_id=h.hospital_id,
                            player=player,
                        )
            sums = [self.fmt.decode(reconstruct(a, b)) for a, b in zip(*result["sums"], strict=True)]
            return sums

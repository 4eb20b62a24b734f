"""A party's gRPC gateway: mutually authenticated TLS in front of and behind its TF server.

Inbound, the gateway listens on the party's configured public `host:port` with gRPC's TLS,
accepts only clients holding a certificate the consortium pinned, and forwards TensorFlow
WorkerService calls (as raw bytes) to the local TF server, which listens on loopback only
(see `loopback`). Everything else TensorFlow serves is refused: a MasterService on a player
would run graphs on its own worker in-process, bypassing the graph policy; EagerService takes
ops one by one, outside any registered graph. Outbound, for each peer the gateway opens a
plaintext forwarder on 127.0.0.1 that the local TF server's cluster spec names instead of the
peer, and carries the calls to the peer's gateway over mTLS pinned to that peer's certificate.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from smpc.errors import GraphRefused, SmpcError, UnknownParty
from smpc.transport.graph_policy import (
    GraphPolicy,
    OpAllowList,
    deny_only,
    graph_op_types,
    partition_digest,
    protocol_op_types,
    refuse_cluster_propagation,
    register_graph_def,
    worker_session_server_def,
)
from smpc.transport.identity import TlsIdentity, dns_name, fingerprint
from smpc.transport.parties import Party, PartyDirectory

__all__ = [
    "Gateway", "GraphPolicy", "OpAllowList", "RegisteredGraph", "caller", "client_channel",
    "deny_only", "protocol_op_types",
]

logger = logging.getLogger(__name__)

WORKER_SERVICE = "/tensorflow.WorkerService/"
REGISTER_GRAPH = WORKER_SERVICE + "RegisterGraph"
CREATE_WORKER_SESSION = WORKER_SERVICE + "CreateWorkerSession"
# What one worker asks of another while a step runs; everything else a worker serves is a
# master's (session set-up, graph registration, running steps), which only the driver is.
DATA_METHODS = frozenset({"RecvTensor", "RecvBuf", "MarkRecvFinished", "GetStatus"})
UNLIMITED = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))
_DROPPED_METADATA = ("user-agent", "content-type", "te", "grpc-")


@dataclass(frozen=True)
class RegisteredGraph:
    """A partition this party's worker accepted: who sent it and its canonical digest."""

    caller: str
    digest: str
    op_types: frozenset[str]


def caller(context: grpc.ServicerContext | grpc.aio.ServicerContext, directory: PartyDirectory) -> Party:
    """The pinned party behind a call's TLS client certificate; UnknownParty if none is.

    The TLS layer already required a chain to a pinned certificate, but a pinned (CA) key can
    sign another certificate: only an exactly pinned certificate names a party.
    """
    certs = context.auth_context().get("x509_pem_cert") or []
    if not certs:
        raise UnknownParty("The caller presented no TLS certificate.")
    party = directory.by_fingerprint(fingerprint(certs[0]))
    if party is None:
        raise UnknownParty("The caller's TLS certificate is not pinned by the consortium.")
    return party


def client_channel(identity: TlsIdentity, directory: PartyDirectory, peer_name: str,
                   *, aio: bool = False) -> grpc.Channel | grpc.aio.Channel:
    """An mTLS channel to `peer_name`'s public gateway that trusts that party's certificate only."""
    peer = directory.by_name(peer_name)
    if peer.address is None:
        raise UnknownParty(f"The consortium gives '{peer_name}' no network address.", party=peer_name)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=peer.cert_pem, private_key=identity.key_pem, certificate_chain=identity.cert_pem
    )
    options = [*UNLIMITED, ("grpc.ssl_target_name_override", dns_name(peer.name))]
    if aio:
        return grpc.aio.secure_channel(peer.address, credentials, options=options)
    return grpc.secure_channel(peer.address, credentials, options=options)


def _forwarded_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (k, v) for k, v in (context.invocation_metadata() or ())
        if not k.startswith(":") and not k.startswith(_DROPPED_METADATA)
    )


def _timeout(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e7 else None


class _Counters:
    """Payload bytes per peer: `sent` to it and `received` from it, whichever side called."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes: dict[str, dict[str, int]] = {}

    def add(self, peer: str, *, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            entry = self._bytes.setdefault(peer, {"sent": 0, "received": 0})
            entry["sent"] += sent
            entry["received"] += received

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {peer: dict(entry) for peer, entry in self._bytes.items()}


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, route: Any) -> None:
        self._route = route

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._route(handler_call_details.method)


class Gateway:
    """One party's gateway; `start()` it before its TF server, `stop()` it after.

    `listen` and `raw_port` enable the inbound side (players, the driver); `peers` names the
    parties this party's TF server calls. `policy` sees every registered graph partition.
    """

    def __init__(
        self,
        identity: TlsIdentity,
        directory: PartyDirectory,
        *,
        listen: str | None = None,
        raw_port: int | None = None,
        peers: Sequence[str] = (),
        policy: GraphPolicy = deny_only,
        extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
    ) -> None:
        if raw_port is not None and listen is None:
            raise SmpcError("A gateway that forwards to a TensorFlow server needs a public address.")
        self.identity = identity
        self.directory = directory
        self.party = directory.by_name(identity.name)
        if self.party.fingerprint != identity.fingerprint:
            raise UnknownParty(
                f"This machine's TLS certificate is not the one the consortium pinned for '{identity.name}'.",
                party=identity.name,
            )
        self.listen = listen
        self.raw_port = raw_port
        self.peers = [directory.by_name(p) for p in peers]
        self.policy = policy
        self.extra_handlers = tuple(extra_handlers)
        self.counters = _Counters()
        self._registered: list[RegisteredGraph] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[grpc.aio.Server] = []
        self._channels: list[grpc.aio.Channel] = []
        self._raw: grpc.aio.Channel | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.public_port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Starts listening; returns each peer's local forwarder address, `127.0.0.1:port`."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"gateway-{self.party.name}",
                                        daemon=True)
        self._thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        except BaseException:
            self.stop()
            raise

    def stop(self, grace: float | None = 0.5) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(grace), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join()
        loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def traffic(self) -> dict[str, dict[str, int]]:
        """Payload bytes exchanged with each peer so far (TLS framing not counted)."""
        return self.counters.snapshot()

    def registered_graphs(self) -> list[RegisteredGraph]:
        return list(self._registered)

    async def _start(self) -> dict[str, str]:
        if self.listen is not None:
            await self._start_inbound()
        return {peer.name: await self._start_outbound(peer) for peer in self.peers}

    async def _stop(self, grace: float | None) -> None:
        await asyncio.gather(*(server.stop(grace) for server in self._servers))
        await asyncio.gather(*(channel.close() for channel in self._channels))

    # -- inbound ----------------------------------------------------------------------------

    async def _start_inbound(self) -> None:
        if self.raw_port is not None:
            self._raw = grpc.aio.insecure_channel(f"127.0.0.1:{self.raw_port}", options=list(UNLIMITED))
            self._channels.append(self._raw)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"gateway-{self.party.name}")
        server = grpc.aio.server(
            migration_thread_pool=self._pool,  # runs synchronous extra handlers
            handlers=[_Handler(self._route_tensorflow), *self.extra_handlers, _Handler(self._refuse)],
            options=list(UNLIMITED),
        )
        credentials = grpc.ssl_server_credentials(
            [(self.identity.key_pem, self.identity.cert_pem)],
            root_certificates=self.directory.trust_bundle(),
            require_client_auth=True,
        )
        assert self.listen is not None
        try:
            port = server.add_secure_port(self.listen, credentials)
        except RuntimeError as exc:
            port, detail = 0, str(exc)
        else:
            detail = None
        if not port:
            raise SmpcError(
                f"The gateway of '{self.party.name}' cannot listen on {self.listen}.", detail=detail
            )
        self.public_port = port
        await server.start()
        self._servers.append(server)

    def _route_tensorflow(self, method: str) -> grpc.RpcMethodHandler | None:
        if not method.startswith("/tensorflow."):
            return None  # an extra service's, or refused by `_refuse`
        if method.startswith(WORKER_SERVICE) and self._raw is not None:
            async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                return await self._forward_worker(method, request, context)
            return grpc.unary_unary_rpc_method_handler(forward)
        return self._refuse(method)

    def _refuse(self, method: str) -> grpc.RpcMethodHandler:
        message = f"The gateway of '{self.party.name}' does not serve {method}."

        async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
            logger.warning("%s refused %s", self.party.name, method)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        return grpc.stream_stream_rpc_method_handler(refuse)

    async def _forward_worker(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            party = caller(context, self.directory)
        except UnknownParty as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, exc.user_message)
        short = method.removeprefix(WORKER_SERVICE)
        if party.role == "hospital" or (party.role == "player" and short not in DATA_METHODS):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"The gateway of '{self.party.name}' does not let {party.role} '{party.name}' call {short}.",
            )
        if method == REGISTER_GRAPH:
            await self._check_graph(party, request, context)
        elif method == CREATE_WORKER_SESSION:
            try:
                refuse_cluster_propagation(worker_session_server_def(request))
            except GraphRefused as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"MedFedChain gateway of '{self.party.name}': {exc.user_message}")
        self.counters.add(party.name, received=len(request))
        assert self._raw is not None
        call = self._raw.unary_unary(method)
        try:
            response: bytes = await call(
                request, metadata=_forwarded_metadata(context), timeout=_timeout(context)
            )
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "", exc.trailing_metadata() or ())
        self.counters.add(party.name, sent=len(response))
        return response

    async def _check_graph(self, party: Party, request: bytes, context: grpc.aio.ServicerContext) -> None:
        try:
            graph_def = register_graph_def(request)
            self.policy(graph_def)
        except GraphRefused as exc:
            logger.warning("%s refused a graph from %s: %s", self.party.name, party.name, exc)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"MedFedChain gateway of '{self.party.name}': {exc.user_message}"
                + (f" Op types: {exc.detail}." if exc.detail else ""),
            )
        record = RegisteredGraph(party.name, partition_digest(graph_def), graph_op_types(graph_def))
        self._registered.append(record)
        logger.info("%s registered a partition from %s: %s", self.party.name, party.name, record.digest)

    # -- outbound ---------------------------------------------------------------------------

    async def _start_outbound(self, peer: Party) -> str:
        channel = client_channel(self.identity, self.directory, peer.name, aio=True)
        assert isinstance(channel, grpc.aio.Channel)
        self._channels.append(channel)

        def route(method: str) -> grpc.RpcMethodHandler:
            async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                self.counters.add(peer.name, sent=len(request))
                try:
                    response: bytes = await channel.unary_unary(method)(
                        request, metadata=_forwarded_metadata(context), timeout=_timeout(context)
                    )
                except grpc.aio.AioRpcError as exc:
                    await context.abort(exc.code(), exc.details() or "", exc.trailing_metadata() or ())
                self.counters.add(peer.name, received=len(response))
                return response
            return grpc.unary_unary_rpc_method_handler(forward)

        server = grpc.aio.server(handlers=[_Handler(route)], options=list(UNLIMITED))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._servers.append(server)
        return f"127.0.0.1:{port}"

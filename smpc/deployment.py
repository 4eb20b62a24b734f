"""The SMPC parties of a real deployment, each in its own process, linked by their gateways.

- A *player* (`PlayerProcess`): its TensorFlow server listens on loopback only (the LD_PRELOAD
  shim), reached from outside only through its gateway (mutual TLS with the consortium's pinned
  certificates, worker calls only, the op allow list built from the protocol graph); a share
  holder also serves the owners' and the driver's `SharePlayer` calls on the same port.
- The *driver* (`open_remote_driver`, in the coordinator's process): an outbound-only gateway, a
  loopback TensorFlow server that masters the session, and `RemotePlayer` clients.
- An *owner* (`owner_links`, in each hospital node): `RemotePlayer` clients of the two holders.

The cluster spec each process gives TensorFlow names its own task at its loopback raw port and
every other task at a local gateway forwarder: addresses differ per process, tasks do not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.models.architecture import ModelSpec
from smpc.driver import SmpcDriver
from smpc.errors import SmpcError
from smpc.factory import DEFAULT_BATCH_SIZE, DEFAULT_TIMEOUT_S, HOLDERS, weight_shapes
from smpc.player_service import LedgerFacts, PlayerService
from smpc.players import DRIVER, ROLES, PlayerConfig
from smpc.remote import RemotePlayer, SharePlayerHandler
from smpc.session import FIXED, SmpcSession
from smpc.transport.gateway import Gateway, OpAllowList, caller, client_channel, protocol_op_types
from smpc.transport.identity import TlsIdentity
from smpc.relaunch import raw_port_under_shim
from smpc.transport.loopback import ensure_loopback_only
from smpc.transport.parties import Party, PartyDirectory

log = logging.getLogger(__name__)

JOB = "medfedchain"
UNUSED_ADDRESS = "127.0.0.1:9"  # the reference session that lists a player's allowed ops connects nowhere


def directory_of(parties: Iterable[tuple[str, str, str | None, str]]) -> PartyDirectory:
    """(name, role, address, certificate PEM) of every pinned party."""
    return PartyDirectory(Party(name, role, cert.encode("ascii"), address)  # type: ignore[arg-type]
                          for name, role, address, cert in parties)


def _identify(directory: PartyDirectory) -> Callable[[Any], tuple[str, str]]:
    def identify(context: Any) -> tuple[str, str]:
        party = caller(context, directory)
        return party.name, party.role
    return identify


def owner_links(identity: TlsIdentity, directory: PartyDirectory, *,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> list[RemotePlayer]:
    """The two share holders as seen from a hospital or the driver, over mutual TLS."""
    return [RemotePlayer(name, client_channel(identity, directory, name), timeout_s=timeout_s)  # type: ignore[arg-type]
            for name in HOLDERS]


@dataclass
class RemoteDriver:
    driver: SmpcDriver
    gateway: Gateway
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        # What the driver received in all its runs: the tests check it is weighted sums only.
        fetched = self.driver.session.fetched
        log.info("the SMPC driver fetched %d tensors: %s", len(fetched), ", ".join(sorted(set(fetched))))
        log.info("the SMPC driver's gateway traffic: %s", self.gateway.traffic())
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - closing the rest matters more
                log.exception("closing the SMPC driver")


def open_remote_driver(spec: ModelSpec, identity: TlsIdentity, directory: PartyDirectory, *,
                       batch_size: int = DEFAULT_BATCH_SIZE, validator_capacity: int = 8,
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> RemoteDriver:
    """The driver in this process (which must run under the loopback shim: `reexec_under_shim`)."""
    raw = raw_port_under_shim()
    if raw is None:
        raise SmpcError("The SMPC driver must run under the loopback shim so that its TensorFlow server "
                        "cannot be reached from other machines.")
    party = directory.by_name(DRIVER)
    if party.address is None:
        raise SmpcError("The consortium gives the SMPC driver no address: the players fetch the public "
                        "inputs the driver feeds (indices, the global model's shares) from it.")
    # Players call the driver only for what it feeds; its gateway lets them call nothing else.
    gateway = Gateway(identity, directory, listen=party.address, raw_port=raw, peers=list(ROLES))
    forwarders = gateway.start()
    closers: list[Callable[[], None]] = [gateway.stop]
    try:
        config = PlayerConfig(job=JOB, players=tuple((n, forwarders[n]) for n in ROLES), driver=f"127.0.0.1:{raw}")
        session = SmpcSession(spec, players=config, batch_size=batch_size, validator_capacity=validator_capacity,
                              timeout_s=timeout_s)
        session.start_server()
        ensure_loopback_only(raw)
        holders = owner_links(identity, directory, timeout_s=timeout_s)
        closers.extend(h.close for h in holders)
        driver = SmpcDriver(session, holders)
        closers.append(driver.close)
        return RemoteDriver(driver, gateway, closers)
    except BaseException:
        for close in reversed(closers):
            close()
        raise


class PlayerProcess:
    """One SMPC player: its loopback TensorFlow server, its gateway and (server0, server1) its
    share holder's service."""

    def __init__(self, name: str, identity: TlsIdentity, directory: PartyDirectory, spec: ModelSpec,
                 ledger: LedgerFacts, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 validator_capacity: int = 8) -> None:
        if name not in ROLES:
            raise SmpcError(f"'{name}' is not an SMPC player; players are {', '.join(ROLES)}.")
        self.name = name
        self.identity = identity
        self.directory = directory
        self.spec = spec
        self.ledger = ledger
        self.batch_size = batch_size
        self.capacity = validator_capacity
        self.gateway: Gateway | None = None
        self.server: Any = None
        self.service: PlayerService | None = None
        self.allowed: frozenset[str] = frozenset()

    @property
    def holder(self) -> int | None:
        return HOLDERS.index(self.name) if self.name in HOLDERS else None

    def start(self) -> None:
        import tensorflow as tf

        from smpc.compat import initialize_rng_states, session_config
        from smpc.shared_vars import VariableAccess

        raw = raw_port_under_shim()
        if raw is None:
            raise SmpcError(f"SMPC player {self.name} must run under the loopback shim (start it with the "
                            "`smpc-player` command) so that its TensorFlow server cannot be reached from other "
                            "machines.")
        party = self.directory.by_name(self.name)
        if party.address is None:
            raise SmpcError(f"The consortium gives SMPC player {self.name} no address to listen on.")
        shapes = weight_shapes(self.spec)
        # The op allow list: every op type of the protocol's programs, as this player builds them.
        reference = SmpcSession(self.spec, batch_size=self.batch_size, validator_capacity=self.capacity,
                                players=PlayerConfig(JOB, tuple((n, UNUSED_ADDRESS) for n in ROLES), UNUSED_ADDRESS))
        self.allowed = protocol_op_types(reference.protocol_graph(shapes)) | _player_ops()
        handler = SharePlayerHandler(None, _identify(self.directory)) if self.holder is not None else None
        self.gateway = Gateway(self.identity, self.directory, listen=party.address, raw_port=raw,
                               peers=[n for n in (*ROLES, DRIVER) if n != self.name], policy=OpAllowList(self.allowed),
                               extra_handlers=[handler] if handler is not None else [])
        forwarders = self.gateway.start()
        try:
            hosts = [f"127.0.0.1:{raw}" if n == self.name else forwarders[n] for n in (*ROLES, DRIVER)]
            task = ROLES.index(self.name)
            self.server = tf.distribute.Server(tf.train.ClusterSpec({JOB: hosts}), job_name=JOB, task_index=task,
                                               config=session_config(), start=True)
            ensure_loopback_only(raw)
            device = f"/job:{JOB}/replica:0/task:{task}/device:CPU:0"
            own = session_config()
            own.device_filters.append(f"/job:{JOB}/task:{task}")  # the other players may not be up yet
            graph = tf.Graph()
            sess = tf.compat.v1.Session(self.server.target, graph=graph, config=own)
            initialize_rng_states(sess, [device])
            if handler is not None and self.holder is not None:
                import threading

                def run(fetches: Any, feed: dict | None) -> Any:
                    return sess.run(fetches, feed_dict=feed)

                access = VariableAccess(device, graph, run, threading.RLock())
                self.service = PlayerService(self.name, self.holder, self.spec, shapes, FIXED, access,
                                             self.ledger)
                _tamper_hook(self.service)
                handler.player = self.service
        except BaseException:
            self.stop()
            raise
        log.info("SMPC player %s serving at %s (raw port %d on loopback)", self.name, party.address, raw)

    def stop(self) -> None:
        if self.gateway is not None:
            log.info("the gateway traffic of %s: %s", self.name, self.gateway.traffic())
            self.gateway.stop()
            self.gateway = None


TAMPER_ENV = "MEDFED_TEST_TAMPER"  # "<hospital>:<round>": tests play a player that alters a share


def _tamper_hook(service: PlayerService) -> None:
    """For the adversarial tests only: once, right after the round's inputs are in place, this
    player changes one entry of a hospital's update share, as a dishonest or broken player
    would; its own commitment check must then refuse to aggregate it."""
    target = os.environ.get(TAMPER_ENV)
    if not target:
        return
    hospital, _, number = target.rpartition(":")
    prepare = service.prepare
    done = False

    def tampering_prepare(layout: Any) -> None:
        nonlocal done
        prepare(layout)
        if not done and str(layout.round_number) == number and hospital in layout.candidates:
            from smpc import shared_vars as names

            done = True
            name = names.slot_name(layout.candidates.index(hospital), service.holder, 0)
            value = service.access.read([name])[0].copy()
            value.flat[0] += 1
            service.access.assign({name: value})
            log.warning("test hook: %s altered its share of %s in round %s", service.name, hospital, number)

    service.prepare = tampering_prepare  # type: ignore[method-assign]


def _player_ops() -> frozenset[str]:
    """Ops of the players' own programs (storing what owners sent, seeding the generator), which
    run through the player's own session, never through the gateway; listed so a driver's graph
    that only names them is no surprise."""
    return frozenset({"VarHandleOp", "AssignVariableOp", "ReadVariableOp", "Placeholder"})


__all__ = ["DRIVER", "JOB", "PlayerProcess", "RemoteDriver", "directory_of", "open_remote_driver",
           "owner_links"]

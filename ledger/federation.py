"""Opening `LedgerChannel`s: every role of a simulation on one chain, or one site's role.

A simulation (`simulate`, the demo) keeps every participant's keystore in one data directory
(the admin, the coordinator, each simulated hospital), makes the registry exactly the simulated
hospitals, and shares one model store: the same role code as a deployment, where each site holds
only its own key (`open_site_channel`) and serves its own store to its peers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from core.federation.channel import COORDINATOR, OBSERVER
from core.state.blobs import BlobStore
from ledger.accounts import keystore_password
from ledger.blobs import BlobServer, StoreTls
from ledger.channel import LedgerChannel
from ledger.clock import BlockClock, EmbeddedClock, NodeClock
from ledger.errors import LedgerError
from ledger.identity import unlock_own_account
from ledger.session import LedgerSession, LedgerSettings, open_ledger

logger = logging.getLogger(__name__)

COORDINATOR_KEY = "coordinator"  # the simulation's coordinator keystore name


def block_clock(session: LedgerSession) -> BlockClock:
    if session.chain is not None:
        return EmbeddedClock(session.chain)
    return NodeClock(session.w3, endpoint=session.endpoint)


class SimulationLedger:
    """Every role of one simulated federation on the ledger of a data directory."""

    def __init__(self, settings: LedgerSettings, hospital_ids: Sequence[str]) -> None:
        self.session = open_ledger(settings)
        try:
            self.store = BlobStore(settings.blob_dir)
            self.clock = block_clock(self.session)
            self._channels: dict[str, LedgerChannel] = {}
            self._register(list(hospital_ids))
        except BaseException:
            self.session.close()
            raise

    def _register(self, hospital_ids: list[str]) -> None:
        """Makes the registry exactly these hospitals, each with its own keystore account; a round
        an interrupted run left open is aborted first (the registry changes only between rounds)."""
        client, keystore = self.session.client, self.session.keystore
        admin = self.session.admin()
        coordinator = keystore.unlock_or_create(COORDINATOR_KEY)
        accounts = {hid: keystore.unlock_or_create(hid) for hid in hospital_ids}
        for account in [coordinator, *accounts.values()]:
            self.session.ensure_funded(account.address)
        current = {m.hospital_id: m.account for m in client.members()}
        wanted = {hid: a.address for hid, a in accounts.items()}
        stale = [account for hid, account in current.items() if wanted.get(hid) != account]
        missing = [hid for hid, address in wanted.items() if current.get(hid) != address]
        if client.coordinator().account != coordinator.address:
            client.set_coordinator(admin, coordinator.address, "")
        if (stale or missing) and client.open_round_id():
            record = client.round(client.open_round_id())
            client.abort_round(coordinator, record.number, "the federation's membership changed")
        for account in stale:
            client.remove_authority(admin, account)
        for hid in missing:
            client.add_authority(admin, wanted[hid], hid, "")
        self._accounts = {COORDINATOR: coordinator, **accounts}

    def channel(self, identity: str) -> LedgerChannel:
        if identity not in self._channels:
            self._channels[identity] = LedgerChannel(self.session.client, identity, self._accounts.get(identity),
                                                     self.store, clock=self.clock)
        return self._channels[identity]

    def close(self) -> None:
        self.session.close()


def open_site_channel(settings: LedgerSettings, contract_address: str, identity: str,
                      serve: tuple[str, int], closers: list[Callable[[], None]],
                      store_tls: StoreTls | None = None) -> LedgerChannel:
    """One site's channel: its own account (keystore/account.json, unlocked with the settings'
    password, else MEDFED_KEYSTORE_PASSWORD), the contract the consortium names, and its model store served on
    exactly the address the registry gives its peers (with `store_tls`, over mutual TLS, and fetching
    from its peers' stores the same way). What it opens goes onto `closers`."""
    if settings.rpc_url is None:
        raise LedgerError("A hospital node or coordinator needs the consortium's ledger node: pass --rpc URL "
                          "or set the ledger node URL in the settings.")
    account = unlock_own_account(settings.keystore_dir,
                                 settings.keystore_password or keystore_password(allow_demo=False))
    session = open_ledger(LedgerSettings(
        home=settings.home, rpc_url=settings.rpc_url, contract_address=contract_address,
        keystore_password=settings.keystore_password, receipt_timeout=settings.receipt_timeout,
        retry=settings.retry, keystore_path=settings.keystore_path, blob_path=settings.blob_path,
    ), read_only=True)
    closers.append(session.close)
    store = BlobStore(settings.blob_dir)
    server = BlobServer(store, host=serve[0], port=serve[1], tls=store_tls).start()
    closers.append(server.stop)
    logger.info("model store of %s served at %s", identity, server.url)
    return LedgerChannel(session.client, identity, account, store, clock=block_clock(session), store_tls=store_tls)



def open_reader_channel(settings: LedgerSettings, contract_address: str,
                        closers: list[Callable[[], None]]) -> LedgerChannel:
    """A channel that only reads the round state (an SMPC player has no ledger account)."""
    if settings.rpc_url is None:
        raise LedgerError("An SMPC player reads the hospitals' share commitments from the consortium's "
                          "ledger node: pass --rpc URL or set the ledger node URL in the settings.")
    session = open_ledger(LedgerSettings(
        home=settings.home, rpc_url=settings.rpc_url, contract_address=contract_address,
        receipt_timeout=settings.receipt_timeout, retry=settings.retry, keystore_path=settings.keystore_path,
        blob_path=settings.blob_path,
    ), read_only=True)
    closers.append(session.close)
    return LedgerChannel(session.client, OBSERVER, None, BlobStore(settings.blob_dir), clock=block_clock(session))

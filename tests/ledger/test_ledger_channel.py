"""The channel contract suite over `LedgerChannel`, on the embedded chain and on anvil, plus what
only a ledger can get wrong: accounts that are not the identity's, lying model stores, gas."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from core.federation.channel import COORDINATOR, PhaseError, RoundTiming
from core.federation.memory_channel import BlobRefused
from ledger.anvil import AnvilNode
from core.state.blobs import BlobStore
from ledger.blobs import BlobServer
from ledger.channel import LedgerChannel, refusal
from ledger.clock import BlockClock, EmbeddedClock, NodeClock
from ledger.errors import TransactionReverted, UnknownAccount
from ledger.node import connect_rpc
from ledger.session import LedgerSession, LedgerSettings, open_ledger
from tests.core.federation.channel_suite import POLICY, PREV, ChannelContract, h
from tests.ledger.conftest import FAST_RETRY, FAST_SCRYPT


class LedgerHarness:
    """A federation on one ledger: the admin registers hospitals, each with its own keystore
    account and model store served over HTTP; the coordinator has an account of its own."""

    def __init__(self, settings: LedgerSettings, work: Path) -> None:
        self.session: LedgerSession = open_ledger(settings)
        self.client = self.session.client
        self.admin = self.session.admin()
        self.work = work
        self.clock: BlockClock = (
            EmbeddedClock(self.session.chain) if self.session.chain is not None
            else NodeClock(self.session.w3, endpoint=self.session.endpoint, max_wait=30)
        )
        self.stores: dict[str, BlobStore] = {}
        self.urls: dict[str, str] = {}
        self.servers: list[BlobServer] = []
        self._channels: dict[str, LedgerChannel] = {}
        coordinator = self._account(COORDINATOR)
        self.client.set_coordinator(self.admin, coordinator.address, self._serve(COORDINATOR))

    def _account(self, identity: str) -> LocalAccount:
        account = self.session.keystore.unlock_or_create(identity)
        self.session.ensure_funded(account.address)
        return account

    def _serve(self, identity: str) -> str:
        store = BlobStore(self.work / "stores" / identity)
        server = BlobServer(store).start()
        self.stores[identity] = store
        self.servers.append(server)
        self.urls[identity] = server.url
        return server.url

    def register(self, hospital_ids: list[str]) -> None:
        for hid in hospital_ids:
            account = self._account(hid)
            url = self.urls[hid] if hid in self.urls else self._serve(hid)
            try:
                self.client.add_authority(self.admin, account.address, hid, url)
            except TransactionReverted as exc:
                raise refusal(exc) from exc

    def deregister(self, hospital_id: str) -> None:
        try:
            self.client.remove_authority(self.admin, self.session.keystore.address_of(hospital_id))
        except TransactionReverted as exc:
            raise refusal(exc) from exc

    def channel(self, identity: str) -> LedgerChannel:
        if identity not in self._channels:
            account = self._account(identity)
            store = self.stores.get(identity) or BlobStore(self.work / "stores" / identity)
            self._channels[identity] = LedgerChannel(self.client, identity, account, store, clock=self.clock)
        return self._channels[identity]

    def advance(self, seconds: float) -> None:
        if self.session.chain is not None:
            self.session.chain.advance_time(self.clock.now() + seconds)
        else:
            self.session.w3.provider.make_request("evm_increaseTime", [int(seconds)])  # type: ignore[arg-type]
            self.session.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.session.close()


@pytest.fixture
def ledger_harness(settings: LedgerSettings, tmp_path: Path) -> Iterator[LedgerHarness]:
    harness = LedgerHarness(settings, tmp_path)
    yield harness
    harness.close()


@pytest.fixture
def embedded_harness(tmp_path: Path) -> Iterator[LedgerHarness]:
    settings = LedgerSettings(home=tmp_path / "home", keystore_password="test-password",
                              scrypt_n=FAST_SCRYPT, retry=FAST_RETRY)
    harness = LedgerHarness(settings, tmp_path)
    yield harness
    harness.close()


class TestLedgerChannel(ChannelContract):
    @pytest.fixture
    def harness(self, ledger_harness: LedgerHarness) -> LedgerHarness:
        return ledger_harness


TIMING = RoundTiming(commit_seconds=100, vote_seconds=100, aggregate_seconds=100)


def test_an_account_that_is_not_the_identitys_is_refused(ledger_harness: LedgerHarness) -> None:
    ledger_harness.register(["h1", "h2"])
    h2_account = ledger_harness.session.keystore.unlock("h2")
    store = BlobStore(ledger_harness.work / "elsewhere")
    with pytest.raises(UnknownAccount) as refused:
        LedgerChannel(ledger_harness.client, "h1", h2_account, store, clock=ledger_harness.clock)
    assert refused.value.hospital_id == "h1"
    with pytest.raises(UnknownAccount):
        LedgerChannel(ledger_harness.client, COORDINATOR, h2_account, store, clock=ledger_harness.clock)
    stranger = ledger_harness._account("stranger")
    with pytest.raises(UnknownAccount):
        LedgerChannel(ledger_harness.client, "h2", stranger, store, clock=ledger_harness.clock)


def test_an_observer_reads_but_cannot_act(ledger_harness: LedgerHarness) -> None:
    ledger_harness.register(["h1"])
    ledger_harness.channel(COORDINATOR).open_round(1, PREV, POLICY, TIMING)
    observer = LedgerChannel(ledger_harness.client, "auditor", None, BlobStore(ledger_harness.work / "obs"),
                             clock=ledger_harness.clock)
    view = observer.current_round()
    assert view is not None and view.round_number == 1 and view.registered == 1
    with pytest.raises(PhaseError) as refused:
        observer.close_commits(1)
    assert refused.value.reason == "read-only observer"


def test_a_peer_store_serving_other_bytes_is_refused(ledger_harness: LedgerHarness) -> None:
    ledger_harness.register(["h1", "h2"])
    digest = ledger_harness.channel("h1").put_blob(b"honest model")
    (ledger_harness.stores["h1"].root / digest).write_bytes(b"tampered model")
    with pytest.raises(BlobRefused):
        ledger_harness.channel("h2").get_blob(digest, owner="h1")
    assert not ledger_harness.stores["h2"].has(digest)  # nothing of the lie was kept


def test_a_blob_of_the_coordinator_is_fetched_from_its_store(ledger_harness: LedgerHarness) -> None:
    ledger_harness.register(["h1"])
    digest = ledger_harness.channel(COORDINATOR).put_blob(b"global model")
    assert ledger_harness.channel("h1").get_blob(digest, owner=COORDINATOR) == b"global model"
    assert ledger_harness.stores["h1"].has(digest)


def test_events_read_in_chunks_are_the_same_events(ledger_harness: LedgerHarness) -> None:
    ledger_harness.register(["h1", "h2"])
    coord = ledger_harness.channel(COORDINATOR)
    coord.open_round(1, PREV, POLICY, TIMING)
    ledger_harness.channel("h1").commit(1, h("m1"), 5)
    whole, last = coord.events(0)
    chunked = LedgerChannel(ledger_harness.client, COORDINATOR, None, BlobStore(ledger_harness.work / "c"),
                            clock=ledger_harness.clock, log_chunk=1)
    assert chunked.events(0) == (whole, last)
    # a cursor from the middle of the round sees only what followed
    ledger_harness.channel("h2").commit(1, h("m2"), 7)
    tail, _ = chunked.events(last)
    assert [type(e).__name__ for e in tail] == ["Committed"] and tail[0].hospital_id == "h2"


def test_the_unverified_baseline_accepts_every_candidate_at_close(ledger_harness: LedgerHarness) -> None:
    ledger_harness.register(["h1", "h2"])
    coord = ledger_harness.channel(COORDINATOR)
    coord.open_round(1, PREV, POLICY, TIMING, verified=False)
    ledger_harness.channel("h1").commit(1, h("m1"), 5)
    ledger_harness.channel("h2").commit(1, h("m2"), 7)
    coord.close_commits(1)
    view = coord.round(1)
    assert view is not None and view.accepted == ("h1", "h2") and not view.verified
    with pytest.raises(PhaseError):
        ledger_harness.channel("h1").vote(1, ["h1"], h("s"))
    decided = [e for e in coord.events(0)[0] if type(e).__name__ == "Decided"]
    assert decided[0].unverified and all(d.accepted for d in decided[0].decisions)  # type: ignore[attr-defined]
    assert {d.model_hash for d in decided[0].decisions} == {h("m1"), h("m2")}  # type: ignore[attr-defined]
    coord.finalize(1, h("g"), ["h1", "h2"])


def test_the_coordinator_is_not_a_hospital(ledger_harness: LedgerHarness) -> None:
    coordinator = ledger_harness.session.keystore.unlock(COORDINATOR)
    with pytest.raises(TransactionReverted) as refused:
        ledger_harness.client.add_authority(ledger_harness.admin, coordinator.address, "h-coord")
    assert refused.value.reason == "account is the coordinator"


# -- gas ------------------------------------------------------------------------------------------

GAS_PER_HOSPITAL = 150_000


def run_round(harness: LedgerHarness, hospital_ids: list[str], number: int = 1) -> dict[str, list[int]]:
    """One whole verified round (everyone commits and votes, every other candidate rejected by
    all); returns the gas used per contract function."""
    gas: dict[str, list[int]] = {}

    def measure(function: str, call: object) -> None:
        before = harness.session.w3.eth.block_number
        call()  # type: ignore[operator]
        for block in range(before + 1, harness.session.w3.eth.block_number + 1):
            for tx in harness.session.w3.eth.get_block(block, full_transactions=True)["transactions"]:
                receipt = harness.session.w3.eth.get_transaction_receipt(tx["hash"])  # type: ignore[index]
                gas.setdefault(function, []).append(int(receipt["gasUsed"]))

    coord = harness.channel(COORDINATOR)
    measure("openRound", lambda: coord.open_round(number, PREV, POLICY, TIMING))
    for i, hid in enumerate(hospital_ids):
        shares = [h(f"share {hid} {j}") for j in range(2)]
        measure("commit", lambda hid=hid, i=i, shares=shares: harness.channel(hid).commit(
            number, h(f"model {hid}"), 100 + i, shares))
    measure("closeCommits", lambda: coord.close_commits(number))
    honest = hospital_ids[1::2]
    for hid in hospital_ids:
        measure("vote", lambda hid=hid: harness.channel(hid).vote(number, honest, h(f"scores {hid}")))
    measure("decide", lambda: coord.decide(number))
    measure("finalizeRound", lambda: coord.finalize(number, h("global"), honest))
    return gas


def test_a_round_of_20_hospitals_costs_at_most_150k_gas_per_hospital(embedded_harness: LedgerHarness) -> None:
    ids = [f"hospital-{i:02d}" for i in range(20)]
    embedded_harness.register(ids)
    gas = run_round(embedded_harness, ids)
    total = sum(sum(v) for v in gas.values())
    assert len(gas["commit"]) == 20 and len(gas["vote"]) == 20
    view = embedded_harness.channel(COORDINATOR).round(1)
    assert view is not None and view.phase.value == "final" and len(view.accepted) == 10
    assert total / 20 <= GAS_PER_HOSPITAL, {k: sum(v) // len(v) for k, v in gas.items()}


def test_share_commitments_and_scores_hash_are_read_back(ledger_harness: LedgerHarness) -> None:
    ledger_harness.register(["h1"])
    coord = ledger_harness.channel(COORDINATOR)
    coord.open_round(1, PREV, POLICY, TIMING)
    shares = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    ledger_harness.channel("h1").commit(1, h("m"), 9, shares)
    view = coord.round(1)
    assert view is not None and view.commitments[0].share_commitments == tuple(shares)
    assert view.commitments[0].num_samples == 9


def test_waiting_on_the_embedded_chain_jumps_to_the_deadline(embedded_harness: LedgerHarness) -> None:
    channel = embedded_harness.channel(COORDINATOR)
    target = channel.now() + 3600
    channel.wait_until(target)
    assert channel.now() >= target


@pytest.mark.anvil
def test_waiting_on_a_node_polls_its_blocks(anvil_binary: Path, tmp_path: Path) -> None:
    node = AnvilNode(anvil_binary, block_time=1).start()
    try:
        w3 = connect_rpc(node.url, FAST_RETRY)
        clock = NodeClock(w3, endpoint=node.url, max_wait=15)
        target = clock.now() + 2
        started = time.monotonic()
        clock.wait_until(target, poll=0.1)
        assert clock.now() >= target and time.monotonic() - started >= 0.5  # it waited for blocks
    finally:
        node.stop()

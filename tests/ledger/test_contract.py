"""The federation contract's rules through `LedgerClient`, on the embedded chain and on anvil:
the exact reasons a refused call gives, and what the registry and round records read back.

The round's state machine as the roles see it is checked by the channel contract suite
(`test_ledger_channel.py`); here are the rules below it that a channel cannot reach."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.client import LedgerClient, LedgerEvent, RoundPhase, readable_args
from ledger.errors import TransactionReverted
from ledger.session import LedgerSession, LedgerSettings, open_ledger

H0, H1 = "11" * 32, "22" * 32
POLICY = "33" * 32


@dataclass
class Chain:
    session: LedgerSession
    client: LedgerClient
    admin: LocalAccount
    coordinator: LocalAccount
    hospitals: list[LocalAccount]

    def now(self) -> int:
        return int(self.session.w3.eth.get_block("latest")["timestamp"])

    def open(self, number: int = 1, *, verified: bool = True) -> None:
        t = self.now()
        self.client.open_round(self.coordinator, number, H0, POLICY, t + 100, t + 200, t + 300, verified=verified)

    def commit_all(self, number: int = 1) -> None:
        for i, h in enumerate(self.hospitals):
            self.client.commit(h, number, f"{i + 1:064x}", 10 * (i + 1), [f"{i:064x}"])

    def advance(self, seconds: int) -> None:
        """Moves block time on: the embedded chain mines a later block, anvil is told to."""
        if self.session.chain is not None:
            self.session.chain.advance_time(self.now() + seconds)
        else:
            self.session.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
            self.session.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def events(self) -> list[str]:
        return [e.name for e in self.client.events()]


def _funded(session: LedgerSession) -> LocalAccount:
    account = Account.create()
    session.ensure_funded(account.address)
    return account


@pytest.fixture
def chain4(settings: LedgerSettings) -> Iterator[Chain]:
    session = open_ledger(settings)
    admin = session.admin()
    coordinator = _funded(session)
    session.client.set_coordinator(admin, coordinator.address, "http://coordinator:8000")
    hospitals = []
    for i in range(4):
        account = _funded(session)
        session.client.add_authority(admin, account.address, f"hospital-{i}", f"http://h{i}:8000")
        hospitals.append(account)
    yield Chain(session, session.client, admin, coordinator, hospitals)
    session.close()


def refused(call: object) -> str:
    with pytest.raises(TransactionReverted) as exc:
        call()  # type: ignore[operator]
    return exc.value.reason


def test_the_registry_is_the_admins_and_lists_ids_and_store_urls(chain4: Chain) -> None:
    c, admin, hospitals = chain4.client, chain4.admin, chain4.hospitals
    assert refused(lambda: c.add_authority(hospitals[0], Account.create().address, "intruder")) == "only the admin"
    assert refused(lambda: c.add_authority(admin, hospitals[1].address, "again")) == "account already registered"
    assert refused(lambda: c.add_authority(admin, Account.create().address, "hospital-1")) == (
        "hospital already registered")
    assert refused(lambda: c.add_authority(admin, chain4.coordinator.address, "h")) == "account is the coordinator"
    assert refused(lambda: c.set_coordinator(admin, hospitals[0].address)) == "the coordinator cannot be a hospital"
    assert [(m.account, m.hospital_id, m.store_url) for m in c.members()] == [
        (h.address, f"hospital-{i}", f"http://h{i}:8000") for i, h in enumerate(hospitals)]
    coordinator = c.coordinator()
    assert (coordinator.account, coordinator.store_url) == (chain4.coordinator.address, "http://coordinator:8000")
    assert c.account_of_hospital("hospital-2") == hospitals[2].address and c.account_of_hospital("nobody") is None


def test_removing_a_hospital_moves_the_last_into_its_position(chain4: Chain) -> None:
    h = chain4.hospitals
    chain4.client.remove_authority(chain4.admin, h[1].address)
    assert chain4.client.authorities() == [h[0].address, h[3].address, h[2].address]
    assert chain4.client.account_of_hospital("hospital-1") is None
    assert chain4.client.hospital_id_of(h[1].address) == "hospital-1"  # past rounds still name it
    assert refused(lambda: chain4.client.remove_authority(chain4.admin, h[1].address)) == (
        "not a registered hospital")
    chain4.open()
    assert chain4.client.round(1).registered == 3
    assert refused(lambda: chain4.client.commit(h[1], 1, H1, 1)) == "not a registered hospital"
    chain4.client.commit(h[3], 1, H1, 1)  # moved to position 1: its bit is that position's
    assert chain4.client.round(1).committed == 0b10


def test_only_the_coordinator_opens_with_deadlines_in_order(chain4: Chain) -> None:
    c, t = chain4.client, chain4.now()
    assert refused(lambda: c.open_round(chain4.admin, 1, H0, POLICY, t + 10, t + 20, t + 30)) == (
        "only the coordinator")
    assert refused(lambda: c.open_round(chain4.coordinator, 1, H0, POLICY, t, t + 20, t + 30)) == (
        "commit deadline is not in the future")
    assert refused(lambda: c.open_round(chain4.coordinator, 1, H0, POLICY, t + 30, t + 20, t + 40)) == (
        "deadlines out of order")
    chain4.open()
    record = c.round(c.open_round_id())
    assert (record.number, record.phase, record.registered, record.previous_hash, record.verified) == (
        1, RoundPhase.COMMIT, 4, H0, True)
    assert record.vote_deadline - record.commit_deadline == 100
    assert refused(lambda: chain4.open(2)) == "another round is open"
    assert refused(lambda: chain4.open(1)) == "round is already open"
    assert refused(lambda: c.remove_authority(chain4.admin, chain4.hospitals[0].address)) == "a round is open"
    assert refused(lambda: c.add_authority(chain4.admin, Account.create().address, "late")) == "a round is open"


def test_commit_rules_and_reasons(chain4: Chain) -> None:
    c, h = chain4.client, chain4.hospitals
    assert refused(lambda: c.commit(h[0], 1, H1, 1)) == "round is not open"
    chain4.open()
    stranger = _funded(chain4.session)
    assert refused(lambda: c.commit(stranger, 1, H1, 1)) == "not a registered hospital"
    assert refused(lambda: c.commit(h[0], 1, "00" * 32, 1)) == "empty model hash"
    c.commit(h[0], 1, H1, 1)
    assert refused(lambda: c.commit(h[0], 1, H1, 1)) == "already committed"
    assert refused(lambda: c.close_commits(stranger, 1)) == "commit deadline not reached"


def test_vote_rules_and_the_majority_of_all_registered(chain4: Chain) -> None:
    c, h = chain4.client, chain4.hospitals
    chain4.open()
    chain4.commit_all()
    assert refused(lambda: c.vote(h[0], 1, 1, H1)) == "voting closed"
    assert refused(lambda: c.decide(h[0], 1)) == "commits not closed"
    c.close_commits(h[0], 1)
    assert refused(lambda: c.close_commits(h[0], 1)) == "commits already closed"
    assert refused(lambda: c.vote(h[0], 1, 1 << 4, H1)) == "unknown candidate"  # 4 candidates: bits 0..3
    # candidate 0: 3 accepts; candidate 1: 2 accepts (a tie of 4 rejects); candidate 2: none
    for validator, bitmap in zip(h[:3], (0b011, 0b011, 0b001), strict=True):
        c.vote(validator, 1, bitmap, H1)
    assert refused(lambda: c.vote(h[0], 1, 0, H1)) == "already voted"
    assert refused(lambda: c.decide(h[0], 1)) == "vote deadline not reached"
    c.vote(h[3], 1, 0b1000, H1)
    c.decide(h[0], 1)
    assert refused(lambda: c.decide(h[0], 1)) == "already decided"
    assert c.round(1).accepted == 0b0001  # 2 of 4 is a tie, which rejects
    decided = chain4.client.events()[-1]
    assert decided.name == "Decided" and decided.args["accepts"] == [3, 2, 0, 1]
    assert decided.args["rejects"] == [1, 2, 4, 3] and decided.args["abstainers"] == []


def test_finalize_takes_exactly_the_accepted(chain4: Chain) -> None:
    c, h = chain4.client, chain4.hospitals
    chain4.open()
    chain4.commit_all()
    c.close_commits(h[0], 1)
    for validator in h:
        c.vote(validator, 1, 0b0011, H1)
    assert refused(lambda: c.finalize_round(chain4.coordinator, 1, H1, [])) == "round not decided"
    c.decide(h[0], 1)
    for contributors, why in [
        ([h[0].address], "contributors must equal the accepted models"),
        ([h[0].address, h[2].address], "contributor was not accepted"),
        ([h[0].address, h[0].address], "duplicate contributor"),
        ([h[0].address, Account.create().address], "contributor was not a candidate"),
    ]:
        assert refused(lambda contributors=contributors: c.finalize_round(
            chain4.coordinator, 1, H1, contributors)) == why
    assert refused(lambda: c.finalize_round(h[0], 1, H1, [h[0].address, h[1].address])) == "only the coordinator"
    assert refused(lambda: c.finalize_round(chain4.coordinator, 1, "00" * 32, [h[0].address])) == (
        "empty global hash")
    c.finalize_round(chain4.coordinator, 1, H1, [h[1].address, h[0].address])
    record = c.round(1)
    assert (record.phase, record.global_hash, c.open_round_id()) == (RoundPhase.FINAL, H1, 0)
    for attempt in (lambda: c.commit(h[0], 1, H0, 1), lambda: c.decide(h[0], 1),
                    lambda: c.finalize_round(chain4.coordinator, 1, H0, []), lambda: chain4.open(1),
                    lambda: c.abort_round(chain4.coordinator, 1, "late")):
        assert refused(attempt) == "round is final"


def test_abort_and_reopen_under_a_new_round_id(chain4: Chain) -> None:
    c, h = chain4.client, chain4.hospitals
    chain4.open()
    c.commit(h[0], 1, H1, 1)
    assert refused(lambda: c.abort_round(h[1], 1, "impatient")) == "only the coordinator before the deadline"
    c.abort_round(chain4.coordinator, 1, "hospital-3 dropped")
    assert refused(lambda: c.abort_round(chain4.coordinator, 1, "again")) == "already aborted"
    chain4.open()
    assert c.latest_round_id(1) == 2 and c.round(1).phase == RoundPhase.ABORTED
    assert c.round(2).committed == 0
    c.commit(h[0], 1, H1, 1)


def test_every_transition_emits_its_event(chain4: Chain) -> None:
    c, h = chain4.client, chain4.hospitals
    chain4.open()
    for i, hospital in enumerate(h[:3]):
        c.commit(hospital, 1, f"{i + 1:064x}", 10 * (i + 1), [f"{i:064x}"])
    assert refused(lambda: c.close_commits(h[0], 1)) == "commit deadline not reached"
    chain4.advance(101)
    c.close_commits(h[3], 1)
    c.vote(h[0], 1, 0b101, "44" * 32)
    assert chain4.events()[-6:] == ["RoundOpened", "Committed", "Committed", "Committed", "CommitsClosed", "Voted"]
    events = c.events()
    committed = next(e for e in events if e.name == "Committed")
    assert committed.args["shares"] == ["00" * 32] and committed.args["numSamples"] == 10
    closed = next(e for e in events if e.name == "CommitsClosed")
    assert closed.args["candidates"] == [x.address for x in h[:3]] and closed.args["dropouts"] == [h[3].address]
    voted = events[-1]
    assert (voted.args["validator"], voted.args["acceptedBitmap"], voted.args["scoresHash"]) == (
        h[0].address, 0b101, "44" * 32)
    assert readable_args(voted)["acceptedBitmap"] == [0, 2]


def test_no_commitment_aborts_at_close(chain4: Chain) -> None:
    chain4.open()
    chain4.advance(101)
    chain4.client.close_commits(chain4.hospitals[0], 1)
    aborted = chain4.client.events()[-1]
    assert aborted.name == "RoundAborted" and aborted.args["reason"] == "no hospital committed an update"
    assert chain4.client.round(1).phase == RoundPhase.ABORTED and chain4.client.open_round_id() == 0


def test_code_hash_is_the_keccak_of_the_runtime_code(chain4: Chain) -> None:
    code = chain4.session.w3.eth.get_code(chain4.client.address)
    assert chain4.client.code_hash() == bytes(Web3.keccak(code)).hex()
    assert len(code) > 0 and chain4.client.code_hash() != bytes(Web3.keccak(b"")).hex()


def test_readable_args_show_bitmaps_as_candidate_indices() -> None:
    event = LedgerEvent("Decided", 7, "0xabc", 0, {"acceptedBitmap": 0b1010, "registered": 4})
    assert readable_args(event) == {"acceptedBitmap": [1, 3], "registered": 4}

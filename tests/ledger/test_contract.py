"""The federation contract's rules, on the embedded chain and on anvil."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.client import Ballot, LedgerClient, RoundState
from ledger.errors import TransactionReverted
from ledger.session import LedgerSession, LedgerSettings, open_ledger

H0, H1 = "11" * 32, "22" * 32
POLICY = "33" * 32


@dataclass
class Chain:
    session: LedgerSession
    client: LedgerClient
    admin: LocalAccount
    hospitals: list[LocalAccount]

    def ballot(self, candidate: LocalAccount, accept: bool) -> Ballot:
        return Ballot(candidate.address, accept, 90, 100, -250_000, 1_500_000, 800_000, 1_000_000)

    def open(self, number: int = 1) -> None:
        self.client.open_round(self.admin, number, H0, POLICY)

    def commit_all(self, number: int = 1) -> None:
        for i, h in enumerate(self.hospitals):
            self.client.commit(h, number, f"{i + 1:064x}", [bytes([i]) * 32])

    def vote(self, validator: LocalAccount, accepts: dict[int, bool], number: int = 1) -> None:
        self.client.vote(validator, number, [self.ballot(self.hospitals[c], a) for c, a in accepts.items()])

    def events(self) -> list[str]:
        return [e.name for e in self.client.events()]


def make_chain(settings: LedgerSettings, n: int) -> Chain:
    session = open_ledger(settings)
    admin = session.admin()
    hospitals = []
    for i in range(n):
        account = Account.create(f"hospital {i}")
        session.ensure_funded(account.address)
        session.client.add_authority(admin, account.address, f"hospital-{i}")
        hospitals.append(account)
    return Chain(session, session.client, admin, hospitals)


@pytest.fixture
def chain4(settings: LedgerSettings) -> Iterator[Chain]:
    chain = make_chain(settings, 4)
    yield chain
    chain.session.close()


def reason(excinfo: pytest.ExceptionInfo[TransactionReverted]) -> str:
    return excinfo.value.reason


def test_registry_is_admin_only(chain4: Chain) -> None:
    outsider = chain4.hospitals[0]
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.add_authority(outsider, Account.create().address, "intruder")
    assert reason(exc) == "only the admin"
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.add_authority(chain4.admin, chain4.hospitals[1].address, "again")
    assert reason(exc) == "account already registered"
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.add_authority(chain4.admin, Account.create().address, "hospital-1")
    assert reason(exc) == "hospital already registered"
    assert chain4.client.authorities() == [h.address for h in chain4.hospitals]
    assert chain4.client.hospital_id_of(chain4.hospitals[2].address) == "hospital-2"


def test_only_operator_opens_rounds_and_coordinator_may(chain4: Chain) -> None:
    coordinator = chain4.hospitals[0]
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.open_round(coordinator, 1, H0, POLICY)
    assert reason(exc) == "only the admin or the coordinator"
    chain4.client.set_coordinator(chain4.admin, coordinator.address)
    chain4.client.open_round(coordinator, 1, H0, POLICY)
    record = chain4.client.round(chain4.client.open_round_id())
    assert (record.number, record.state, record.registered, record.previous_hash) == (
        1,
        RoundState.OPEN,
        4,
        H0,
    )
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.open_round(chain4.admin, 2, H0, POLICY)
    assert reason(exc) == "another round is open"


def test_registry_is_frozen_while_a_round_is_open(chain4: Chain) -> None:
    chain4.open()
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.remove_authority(chain4.admin, chain4.hospitals[0].address)
    assert reason(exc) == "a round is open"


def test_only_authorities_commit_and_only_once(chain4: Chain) -> None:
    chain4.open()
    stranger = Account.create()
    chain4.session.ensure_funded(stranger.address)
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.commit(stranger, 1, H1, [])
    assert reason(exc) == "not an authority"
    chain4.client.commit(chain4.hospitals[0], 1, H1, [])
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.commit(chain4.hospitals[0], 1, H1, [])
    assert reason(exc) == "already committed"
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.commit(chain4.hospitals[1], 2, H1, [])
    assert reason(exc) == "round is not open"


def test_removed_authority_can_no_longer_commit(chain4: Chain) -> None:
    chain4.client.remove_authority(chain4.admin, chain4.hospitals[3].address)
    chain4.open()
    assert chain4.client.round(chain4.client.open_round_id()).registered == 3
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.commit(chain4.hospitals[3], 1, H1, [])
    assert reason(exc) == "not an authority"


def test_double_vote_and_vote_on_uncommitted_are_refused(chain4: Chain) -> None:
    chain4.open()
    chain4.client.commit(chain4.hospitals[0], 1, H1, [])
    with pytest.raises(TransactionReverted) as exc:
        chain4.vote(chain4.hospitals[1], {1: True})
    assert reason(exc) == "candidate did not commit"
    chain4.vote(chain4.hospitals[1], {0: True})
    with pytest.raises(TransactionReverted) as exc:
        chain4.vote(chain4.hospitals[1], {0: False})
    assert reason(exc) == "already voted"
    assert (
        chain4.client.vote_of(
            chain4.client.open_round_id(), chain4.hospitals[0].address, chain4.hospitals[1].address
        )
        is True
    )


@pytest.mark.parametrize(("accepts", "accepted"), [(2, False), (3, True), (4, True), (0, False)])
def test_majority_of_all_registered_authorities(chain4: Chain, accepts: int, accepted: bool) -> None:
    """With 4 authorities a 2-2 tie rejects: strictly more than half must accept."""
    chain4.open()
    chain4.commit_all()
    for i, validator in enumerate(chain4.hospitals):
        chain4.vote(validator, {0: i < accepts})
    chain4.client.decide(chain4.admin, 1)
    round_id = chain4.client.open_round_id()
    assert chain4.client.tally(round_id, chain4.hospitals[0].address) == (accepts, 4 - accepts, accepted)
    # Candidates nobody voted for are rejected, as abstentions count against.
    assert chain4.client.tally(round_id, chain4.hospitals[1].address) == (0, 0, False)


def test_missing_voters_count_against(chain4: Chain) -> None:
    """Two accepts of four registered do not pass even when the other two never vote."""
    chain4.open()
    chain4.commit_all()
    chain4.vote(chain4.hospitals[0], {0: True})
    chain4.vote(chain4.hospitals[1], {0: True})
    chain4.client.decide(chain4.admin, 1)
    assert chain4.client.tally(chain4.client.open_round_id(), chain4.hospitals[0].address)[2] is False


def _decided_round(chain: Chain) -> None:
    """Candidates 0 and 1 accepted by everyone, 2 and 3 rejected."""
    chain.open()
    chain.commit_all()
    for validator in chain.hospitals:
        chain.vote(validator, {0: True, 1: True, 2: False, 3: False})
    chain.client.decide(chain.admin, 1)


def test_contributors_must_equal_accepted(chain4: Chain) -> None:
    _decided_round(chain4)
    h = chain4.hospitals
    for contributors, why in [
        ([h[0].address], "contributors must equal the accepted models"),
        ([h[0].address, h[2].address], "contributor was not accepted"),
        ([h[0].address, h[0].address], "duplicate contributor"),
        ([h[0].address, h[1].address, h[2].address], "contributors must equal the accepted models"),
    ]:
        with pytest.raises(TransactionReverted) as exc:
            chain4.client.finalize_round(chain4.admin, 1, H1, contributors)
        assert reason(exc) == why
    chain4.client.finalize_round(chain4.admin, 1, H1, [h[1].address, h[0].address])
    record = chain4.client.round(1)
    assert (record.state, record.global_hash, record.accepted_count) == (RoundState.FINALIZED, H1, 2)
    assert chain4.client.contributors(1) == [h[1].address, h[0].address]


def test_finalize_needs_decision_and_nothing_changes_after(chain4: Chain) -> None:
    chain4.open()
    chain4.commit_all()
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.finalize_round(chain4.admin, 1, H1, [])
    assert reason(exc) == "round not decided"
    chain4.client.decide(chain4.admin, 1)
    with pytest.raises(TransactionReverted) as exc:
        chain4.vote(chain4.hospitals[0], {1: True})
    assert reason(exc) == "voting closed"
    chain4.client.finalize_round(chain4.admin, 1, H1, [])
    for attempt in (
        lambda: chain4.vote(chain4.hospitals[0], {1: True}),
        lambda: chain4.client.commit(chain4.hospitals[0], 1, H0, []),
        lambda: chain4.client.decide(chain4.admin, 1),
        lambda: chain4.client.finalize_round(chain4.admin, 1, H0, []),
        lambda: chain4.client.abort_round(chain4.admin, 1, "late"),
    ):
        with pytest.raises(TransactionReverted) as exc:
            attempt()
        assert reason(exc) == "round is not open"
    assert chain4.client.round(1).global_hash == H1


def test_aborted_round_stays_on_record_and_number_reopens(chain4: Chain) -> None:
    chain4.open()
    chain4.client.commit(chain4.hospitals[0], 1, H1, [])
    chain4.client.abort_round(chain4.admin, 1, "hospital-3 dropped")
    chain4.open()
    assert chain4.client.latest_round_id(1) == 2
    assert chain4.client.round(1).state == RoundState.ABORTED
    assert chain4.client.commitment(1, chain4.hospitals[0].address) is not None
    assert chain4.client.commitment(2, chain4.hospitals[0].address) is None


def test_every_step_emits_its_event(chain4: Chain) -> None:
    _decided_round(chain4)
    chain4.client.record_failure(chain4.admin, 1, "hospital-3", "validation", "timed out")
    chain4.client.finalize_round(
        chain4.admin, 1, H1, [chain4.hospitals[0].address, chain4.hospitals[1].address]
    )
    names = chain4.events()
    assert names == (
        ["AuthorityAdded"] * 4
        + ["RoundOpened"]
        + ["Committed"] * 4
        + ["Voted"] * 16
        + ["Decided"] * 4
        + ["FailureRecorded", "RoundFinalized"]
    )
    events = chain4.client.events()
    committed = next(e for e in events if e.name == "Committed")
    assert committed.args["shares"] == ["00" * 32] and committed.args["modelHash"] == f"{1:064x}"
    voted = next(e for e in events if e.name == "Voted")
    assert (voted.args["cosine"], voted.args["correct"], voted.args["total"]) == (-250_000, 90, 100)
    decided = [e.args for e in events if e.name == "Decided"]
    assert [(d["accepts"], d["rejects"], d["registered"], d["accepted"]) for d in decided] == [
        (4, 0, 4, True),
        (4, 0, 4, True),
        (0, 4, 4, False),
        (0, 4, 4, False),
    ]
    finalized = events[-1].args
    assert finalized["globalHash"] == H1 and len(finalized["contributors"]) == 2


def test_unverified_baseline_takes_every_candidate_on_record(chain4: Chain) -> None:
    chain4.open()
    chain4.commit_all()
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.decide_unverified(chain4.hospitals[0], 1)
    assert reason(exc) == "only the admin or the coordinator"
    chain4.client.decide_unverified(chain4.admin, 1)
    record = chain4.client.round(1)
    assert record.unverified and record.decided and record.accepted_count == 4
    assert chain4.events()[-5:] == ["VerificationSkipped"] + ["Decided"] * 4


def test_a_voted_round_cannot_be_declared_unverified(chain4: Chain) -> None:
    chain4.open()
    chain4.commit_all()
    chain4.vote(chain4.hospitals[0], {1: False})
    with pytest.raises(TransactionReverted) as exc:
        chain4.client.decide_unverified(chain4.admin, 1)
    assert reason(exc) == "votes were cast in this round"


def test_vote_scores_read_back_as_decimals() -> None:
    from ledger.client import LedgerEvent, readable_args

    event = LedgerEvent("Voted", 7, "0xabc", 0, {"accept": True, "correct": 17, "total": 18,
                                                  "cosine": -393899, "norm": 1528369,
                                                  "referenceAccuracy": 944444, "referenceNorm": 1000000})
    args = readable_args(event)
    assert args["correct"] == 17 and args["total"] == 18 and args["accept"] is True
    assert args["cosine"] == pytest.approx(-0.393899) and args["norm"] == pytest.approx(1.528369)
    assert args["referenceAccuracy"] == pytest.approx(0.944444) and args["referenceNorm"] == 1.0

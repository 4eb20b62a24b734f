"""The roles on the in-memory channel, with real hospitals (Keras, breast cancer): what each does
when another role fails, lies or restarts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from core.attacks.base import Attack, AttackContext
from core.data.builtin import breast_cancer
from core.data.partition import partition
from core.federation.aggregators import FedAvg
from core.federation.channel import COORDINATOR, CommitsClosed, Phase, RoundTiming
from core.federation.hospital import HospitalData, LocalHospital
from core.federation.interfaces import Aggregator
from core.federation.memory_channel import InMemoryLedger
from core.federation.plaintext_verifier import NoVerifier, PlaintextVerifier
from core.federation.policy import VerificationPolicy
from core.federation.roles.archive import RoundArchive
from core.federation.roles.ballots import scores_hash
from core.federation.roles.coordinator import Coordinator, Schedule
from core.federation.roles.node import HospitalNode
from core.federation.roles.runner import run_in_turn
from core.federation.roles.state import MemoryRoleState
from core.federation.types import Candidate, Commitment, HospitalInfo
from core.models.architecture import spec_for
from core.models.training import TrainingConfig, initial_weights
from core.models.weights import Weights, scale
from core.state.db import open_database
from core.state.recorder import SqliteRecorder

POLICY = VerificationPolicy()
TIMING = RoundTiming(100, 100, 100)


class NaNUpdate(Attack):
    name = "nan_update"

    def poison_update(self, ctx: AttackContext) -> Weights:
        return [np.full_like(w, np.nan) for w in ctx.honest_delta]


class Explodes(Attack):
    name = "explodes"

    def poison_update(self, ctx: AttackContext) -> Weights:
        raise RuntimeError("the attack plugin crashed")


class BoostedAggregator(Aggregator):
    """A cheating coordinator: publishes FedAvg of the accepted updates, boosted."""

    name = "boosted"

    def aggregate(self, global_weights: Weights, accepted: Sequence[Candidate],
                  commitments: Sequence[Commitment]) -> Weights:
        honest = FedAvg().aggregate(global_weights, accepted, commitments)
        return [g + 3 * (h - g) for g, h in zip(global_weights, honest, strict=True)]


@dataclass
class Federation:
    ledger: InMemoryLedger
    nodes: list[HospitalNode]
    coordinator: Coordinator
    archive: RoundArchive
    recorder: SqliteRecorder

    def run(self) -> None:
        run_in_turn(self.ledger.channel("observer"), self.coordinator, self.nodes, self.archive)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    dataset = breast_cancer()
    return dataset, partition(dataset, 4, seed=0)


def build(data, tmp_path, *, attacks: dict[str, Attack] | None = None, rounds: int = 1,  # type: ignore[no-untyped-def]
          aggregator: Aggregator | None = None, verified: bool = True) -> Federation:
    dataset, split = data
    spec = spec_for(dataset)
    training = TrainingConfig(epochs=2, batch_size=16, learning_rate=0.005, seed=0)
    attacks = attacks or {}
    ledger = InMemoryLedger()
    for h in split.hospitals:
        ledger.register(h.hospital_id)
    verifier = PlaintextVerifier(spec) if verified else NoVerifier()
    colluders = sorted(attacks)
    hospitals = [LocalHospital(HospitalInfo(h.hospital_id, h.hospital_id, h.hospital_id in attacks),
                               HospitalData(h.train, h.validation), spec, training,
                               attack=attacks.get(h.hospital_id), colluders=colluders, num_hospitals=4)
                 for h in split.hospitals]
    nodes = [HospitalNode(ledger.channel(h.info.hospital_id), h, verifier, POLICY, global_check=FedAvg())
             for h in sorted(hospitals, key=lambda h: h.attack is not None)]
    coordinator = Coordinator(ledger.channel(COORDINATOR), aggregator or FedAvg(),
                              Schedule(rounds, POLICY.digest(), TIMING, verified=verified), initial_weights(spec, 0))
    database = open_database(tmp_path / "state.db")
    recorder = SqliteRecorder(database, blob_dir=tmp_path / "blobs")
    by_id = {n.hospital_id: n for n in nodes}

    def scores(attempt: int, validator: str):  # type: ignore[no-untyped-def]
        ballot = by_id[validator].ballot(attempt)
        return ballot.scores if ballot else None

    archive = RoundArchive(ledger.channel("observer"), recorder, POLICY, scores=scores,
                           failures=lambda a, h: by_id[h].failure(a),
                           hospitals={h.info.hospital_id: h.info for h in hospitals})
    return Federation(ledger, nodes, coordinator, archive, recorder)


def test_an_attacker_is_rejected_and_every_vote_opens_to_its_hash(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from core.attacks.label_flip import LabelFlipAttack

    fed = build(data, tmp_path, attacks={"hospital-4": LabelFlipAttack()})
    fed.run()
    view = fed.ledger.channel("x").round(1)
    assert view is not None and view.phase is Phase.FINAL
    assert set(view.accepted) == {"hospital-1", "hospital-2", "hospital-3"}
    (outcome,) = fed.archive.outcomes
    assert {v.validator_id for v in outcome.votes} == {f"hospital-{i}" for i in range(1, 5)}
    from core.federation.channel import Voted

    voted = [e for e in fed.ledger.channel("x").events(0)[0] if isinstance(e, Voted)]
    for event in voted:
        ballot = next(n for n in fed.nodes if n.hospital_id == event.validator_id).ballot(event.attempt)
        assert ballot is not None and scores_hash(ballot.scores, ballot.salt) == event.scores_hash
        assert ballot.accepted == event.accepted
    fed.recorder.database.close()


@pytest.mark.parametrize("attack", [NaNUpdate(), Explodes()], ids=["nan-update", "plugin-raises"])
def test_a_hospital_that_sends_garbage_is_its_own_dropout_and_the_round_goes_on(  # type: ignore[no-untyped-def]
        attack, data, tmp_path) -> None:
    fed = build(data, tmp_path, attacks={"hospital-4": attack})
    fed.run()
    view = fed.ledger.channel("x").round(1)
    assert view is not None and view.phase is Phase.FINAL
    assert "hospital-4" not in view.candidates and set(view.accepted) == {"hospital-1", "hospital-2", "hospital-3"}
    (outcome,) = fed.archive.outcomes
    (failure,) = outcome.failures
    assert failure.hospital_id == "hospital-4" and failure.stage == "training"
    assert "NaN" in failure.message or "crashed" in failure.message
    fed.recorder.database.close()


def test_a_hospital_restarted_after_committing_votes_without_committing_again(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fed = build(data, tmp_path)
    fed.coordinator.step()
    first = fed.nodes[0]
    assert first.step()  # trains and commits
    state = first.state
    restarted = HospitalNode(first.channel, first.hospital, first.verifier, POLICY, state=state)
    fed.nodes[0] = restarted
    assert not restarted.step()  # its commitment is on the channel: nothing to do until commits close
    fed.run()
    view = fed.ledger.channel("x").round(1)
    assert view is not None and view.phase is Phase.FINAL and "hospital-1" in view.voters
    committed = [e for e in fed.ledger.channel("x").events(0)[0]
                 if type(e).__name__ == "Committed" and e.hospital_id == "hospital-1"]  # type: ignore[union-attr]
    assert len(committed) == 1
    fed.recorder.database.close()


def test_a_restarted_coordinator_finishes_the_round(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fed = build(data, tmp_path)
    channel = fed.ledger.channel("x")
    while True:
        fed.coordinator.step()
        for node in fed.nodes:
            node.step()
        view = channel.current_round()
        if view is not None and view.phase is Phase.AGGREGATE:
            break
    fed.coordinator = Coordinator(fed.coordinator.channel, FedAvg(), fed.coordinator.schedule,
                                  fed.coordinator.initial)
    fed.run()
    view = channel.round(1)
    assert view is not None and view.phase is Phase.FINAL and view.attempt == 1
    fed.recorder.database.close()


def test_a_dropout_at_the_deadline_does_not_stop_the_round(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fed = build(data, tmp_path)
    absent = fed.nodes.pop()  # never steps: its machine is down
    fed.run()
    closed = next(e for e in fed.ledger.channel("x").events(0)[0] if isinstance(e, CommitsClosed))
    assert closed.dropouts == (absent.hospital_id,)
    (outcome,) = fed.archive.outcomes
    assert [f.hospital_id for f in outcome.failures] == [absent.hospital_id]
    assert "deadline" in outcome.failures[0].message
    fed.recorder.database.close()


def test_every_hospital_catches_a_coordinator_that_cheats_and_will_not_train_on_its_model(  # type: ignore[no-untyped-def]
        data, tmp_path) -> None:
    fed = build(data, tmp_path, aggregator=BoostedAggregator(), rounds=2)
    with pytest.raises(Exception, match="stalled|aborted"):
        fed.run()
    for node in fed.nodes:
        assert [a.stage for a in node.alerts] == ["global check"]
        assert "not the aggregate" in node.alerts[0].message
    round_two = fed.ledger.channel("x").round(2)
    assert round_two is None or not round_two.commitments  # nobody trains on the cheated model
    fed.recorder.database.close()


def test_a_model_store_that_lies_gets_its_candidate_rejected(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fed = build(data, tmp_path)
    fed.coordinator.step()
    for node in fed.nodes:
        node.step()
    view = fed.ledger.channel("x").current_round()
    assert view is not None
    lying = view.commitment_of("hospital-2")
    assert lying is not None
    fed.ledger.tamper_blob("hospital-2", lying.model_hash, b"not the committed model")
    fed.run()
    final = fed.ledger.channel("x").round(1)
    assert final is not None and "hospital-2" not in final.accepted
    fed.recorder.database.close()


def test_a_committed_blob_that_is_not_a_model_is_rejected_and_the_rounds_go_on(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # hospital-4 publishes garbage bytes and commits to their (correct) hash: the blob is what it
    # committed, but no model. Validators reject it, the coordinator aggregates the others.
    fed = build(data, tmp_path, rounds=2)
    fed.coordinator.step()
    garbage = fed.ledger.channel("hospital-4")
    garbage.commit(1, garbage.put_blob(b"\x00not a model at all\xff" * 64), 100)
    fed.run()
    channel = fed.ledger.channel("x")
    first, second = channel.round(1), channel.round(2)
    assert first is not None and first.phase is Phase.FINAL and first.attempt == 1
    assert "hospital-4" in first.candidates and "hospital-4" not in first.accepted
    assert set(first.contributors) == {"hospital-1", "hospital-2", "hospital-3"}
    assert second is not None and second.phase is Phase.FINAL  # the next round goes on, hospital-4 in it
    assert "hospital-4" in second.candidates
    one = fed.archive.outcomes[0]
    assert next(d for d in one.decisions if d.candidate_id == "hospital-4").status.value == "rejected"
    fed.recorder.database.close()


def test_the_unverified_baseline_takes_every_candidate_unvoted(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fed = build(data, tmp_path, verified=False)
    fed.run()
    view = fed.ledger.channel("x").round(1)
    assert view is not None and view.voters == () and len(view.accepted) == 4
    (outcome,) = fed.archive.outcomes
    assert all(d.unverified for d in outcome.decisions)
    fed.recorder.database.close()


def test_a_scaled_update_is_refused_by_the_honest_majority(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    class Scale(Attack):
        name = "scale10"

        def poison_update(self, ctx: AttackContext) -> Weights:
            return scale(ctx.honest_delta, 10.0)

    fed = build(data, tmp_path, attacks={"hospital-4": Scale()})
    fed.run()
    view = fed.ledger.channel("x").round(1)
    assert view is not None and "hospital-4" in view.candidates and "hospital-4" not in view.accepted
    fed.recorder.database.close()


def test_state_survives_in_a_role_state_document() -> None:
    state = MemoryRoleState()
    state.save({"cursor": 3, "ballots": {"1": {"x": 1}}})
    loaded = state.load()
    loaded["cursor"] = 99
    assert state.load()["cursor"] == 3

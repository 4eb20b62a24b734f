"""The roles of a secure federation on the in-memory channel: every hospital shares its own inputs
with the in-process SMPC holders, the driver scores, and each node checks every published global
model against the holders' weighted sum of what the chain accepted."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from core.data.builtin import breast_cancer
from core.data.partition import partition
from core.federation.channel import COORDINATOR, Phase, RoundTiming
from core.federation.hospital import HospitalData, LocalHospital
from core.federation.interfaces import Aggregator
from core.federation.memory_channel import InMemoryLedger
from core.federation.policy import VerificationPolicy
from core.federation.roles.coordinator import Coordinator, Schedule
from core.federation.roles.driver import ScoringDriver
from core.federation.roles.node import HospitalNode
from core.federation.types import Candidate, Commitment, HospitalInfo
from core.models.architecture import spec_for
from core.models.training import TrainingConfig, initial_weights
from core.models.weights import Weights
from core.services.wiring import ChannelFacts

POLICY = VerificationPolicy()


class Boosted(Aggregator):
    """A cheating coordinator and driver: publishes the secure aggregate, boosted."""

    name = "boosted"
    needs_updates = False

    def __init__(self, honest: Aggregator) -> None:
        self.honest = honest

    def aggregate(self, global_weights: Weights, accepted: Sequence[Candidate],
                  commitments: Sequence[Commitment]) -> Weights:
        fair = self.honest.aggregate(global_weights, accepted, commitments)
        return [g + 3 * (h - g) for g, h in zip(global_weights, fair, strict=True)]


def _federation(*, cheat: bool):  # type: ignore[no-untyped-def]
    from smpc.factory import build_in_process

    dataset = breast_cancer()
    split = partition(dataset, 3, seed=0)
    spec = spec_for(dataset)
    ledger = InMemoryLedger()
    for h in split.hospitals:
        ledger.register(h.hospital_id)
    secure = build_in_process(spec, ChannelFacts(ledger.channel("observer")), batch_size=32)
    training = TrainingConfig(epochs=1, batch_size=16, learning_rate=0.005, seed=0)
    nodes = [HospitalNode(ledger.channel(h.hospital_id),
                          LocalHospital(HospitalInfo(h.hospital_id, h.hospital_id), HospitalData(h.train, h.validation),
                                        spec, training, num_hospitals=3),
                          secure.owner(h.hospital_id), POLICY, global_check=secure.global_check())
             for h in split.hospitals]
    aggregator: Aggregator = Boosted(secure.driver) if cheat else secure.driver
    coordinator = Coordinator(ledger.channel(COORDINATOR), aggregator,
                              Schedule(2, POLICY.digest(), RoundTiming(100, 100, 100)), initial_weights(spec, 0))
    driver = ScoringDriver(ledger.channel("observer"), secure.driver)
    return ledger, nodes, coordinator, driver, secure


def _run(ledger, nodes, coordinator, driver, passes: int = 60) -> None:  # type: ignore[no-untyped-def]
    channel = ledger.channel("observer")
    for _ in range(passes):
        acted = coordinator.step()
        for node in nodes:
            acted = node.step() or acted
        acted = driver.step() or acted
        if coordinator.done and not acted:
            return
        if not acted:
            deadline = coordinator.next_deadline()
            if deadline is None:
                return
            channel.wait_until(deadline)


def test_nodes_check_each_global_model_against_the_holders_sums() -> None:
    ledger, nodes, coordinator, driver, secure = _federation(cheat=False)
    try:
        _run(ledger, nodes, coordinator, driver)
        assert ledger.channel("x").round(2).phase is Phase.FINAL  # type: ignore[union-attr]
        for node in nodes:
            assert len(node.checked) == 2 and set(node.checked.values()) == {"ok"}, node.checked
            assert not node.alerts
        assert secure.driver.session.fetched == []
    finally:
        secure.close()


def test_a_driver_that_publishes_another_global_model_is_caught_by_every_node() -> None:
    ledger, nodes, coordinator, driver, secure = _federation(cheat=True)
    try:
        with pytest.raises(Exception, match="aborted"):  # round 2 finds no hospital to train on it
            _run(ledger, nodes, coordinator, driver)
        for node in nodes:
            assert [a.stage for a in node.alerts] == ["global check"], node.alerts
            assert "not the aggregate" in node.alerts[0].message
        round_two = ledger.channel("x").round(2)
        assert round_two is None or not round_two.commitments  # nobody trains on the cheated model
    finally:
        secure.close()

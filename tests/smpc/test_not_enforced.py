"""What is NOT enforced, documented in the README ("Deployment and threat model"): the programs a
pinned driver runs are its own choice, so it may read a share holder's variables by name (and so
reconstruct or weight any update it likes); and the commitment check runs on the share holder
itself, so a dishonest holder that skips it goes unnoticed. These tests fail once something
refuses what they do, and the docs must then change."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from core.federation.types import Candidate, ValidatorInput
from core.models.architecture import tabular_cnn_spec
from core.models.training import initial_weights
from core.models.weights import add, weights_hash
from smpc import shared_vars as names
from smpc.deployment import JOB, UNUSED_ADDRESS, _player_ops
from smpc.fixedpoint import reconstruct
from smpc.players import DRIVER, ROLES, PlayerConfig
from smpc.session import SmpcSession
from smpc.transport.graph_policy import OpAllowList, protocol_op_types
from tests.smpc import scenarios

SPEC = tabular_cnn_spec(12, 2)


@pytest.fixture(scope="module")
def scored():
    global_weights = initial_weights(SPEC, 0)
    rng = np.random.default_rng(1)
    candidates = []
    for name in ("a", "b"):
        delta = [rng.normal(scale=0.05, size=w.shape).astype(np.float32) for w in global_weights]
        candidates.append(Candidate(name, 2, delta, 20, weights_hash(add(global_weights, delta))))
    validators = [ValidatorInput(c.hospital_id, scenarios.tabular_data(8, seed=i), c.delta)
                  for i, c in enumerate(candidates)]
    secure = scenarios.secure_round(scenarios.Scenario(SPEC, global_weights, candidates, validators), batch_size=8)
    yield secure, candidates
    secure.federation.close()


def test_a_driver_can_read_both_holders_shares_of_an_update_by_name(scored) -> None:
    secure, candidates = scored
    session = secure.federation.driver.session
    slot = secure.federation.driver._layouts[2].candidates.index("a")  # noqa: SLF001
    with session._graph.as_default():  # noqa: SLF001 - a program of the driver's own making
        reads = []
        for p, device in enumerate(session.holders):
            with tf.device(device):
                reads.append([names.read(names.slot_name(slot, p, i)) for i in range(len(candidates[0].delta))])
    share0, share1 = session.run(reads)
    encoded = [session.fmt.encode(d, what="test") for d in candidates[0].delta]
    for s0, s1, e in zip(share0, share1, encoded, strict=True):
        np.testing.assert_array_equal(reconstruct(s0, s1), e)


def test_a_players_allow_list_admits_a_graph_that_ships_a_share_to_the_driver() -> None:
    """The op allow list a player builds (as `PlayerProcess.start` does) names op types, not
    data: reading a slot variable by name and sending it to the driver uses allowed ops only."""
    config = PlayerConfig(JOB, tuple((n, UNUSED_ADDRESS) for n in ROLES), UNUSED_ADDRESS)
    reference = SmpcSession(SPEC, batch_size=8, validator_capacity=2, players=config)
    allowed = OpAllowList(protocol_op_types(reference.protocol_graph([w.shape for w in initial_weights(SPEC, 0)]))
                          | _player_ops())
    graph = tf.Graph()
    with graph.as_default():
        with tf.device(config.device("server0")):
            share = names.read(names.slot_name(0, 0, 0), [3, 1, 1, 8])
        with tf.device(config.device(DRIVER)):
            tf.identity(share)
    theft = graph.as_graph_def()
    assert {n.op for n in theft.node} >= {"VarHandleOp", "ReadVariableOp"}
    allowed(theft)  # no GraphRefused
    assert {"_Send", "_Recv"} <= allowed.op_types  # what partitioning adds to carry it across


def test_a_holder_that_skips_its_own_commitment_check_aggregates_an_altered_share(scored) -> None:
    """Run last: it alters server1's share of "b". The check guards against an altered share on an
    honest player; a dishonest one simply does not run it, and nobody else re-checks."""
    secure, candidates = scored
    fed = secure.federation
    slot = fed.driver._layouts[2].candidates.index("b")  # noqa: SLF001
    holder = fed.holders[1]
    name = names.slot_name(slot, 1, 0)
    value = holder.access.read([name])[0].copy()
    value.flat[0] += 3**9 * 100  # +100 on one weight of b's update
    holder.access.assign({name: value})
    # A dishonest holder reads its slots without checking them against the chain.
    holder._checked_share = lambda layout, hid: holder.access.read(  # type: ignore[method-assign]  # noqa: SLF001
        [names.slot_name(layout.candidates.index(hid), 1, i) for i in range(len(holder.shapes))])
    b = candidates[1]
    secure.facts.decide(2, [b])
    result = fed.driver.aggregate(initial_weights(SPEC, 0), [dataclasses.replace(b, delta=[])],
                                  [secure.commitments["b"]])
    assert result[0].flat[0] == pytest.approx(initial_weights(SPEC, 0)[0].flat[0] + b.delta[0].flat[0] + 100, abs=1e-3)

"""Stepping roles: every role of a simulation in turn in one process, or one role in a loop.

`run_in_turn` is what `simulate`, the demo and the tests use: each pass steps the coordinator,
the hospital nodes (honest ones first, as their order is given) and the archive; when no role
has anything to do, the channel's clock is moved to the round's next deadline (a simulated
clock jumps there; a real chain is waited for). `run_role` is one process's loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from core.errors import FederationError
from core.federation.channel import Phase, RoundChannel
from core.federation.roles.archive import RoundArchive
from core.federation.roles.coordinator import Coordinator
from core.federation.roles.node import HospitalNode
from core.progress import CancelToken

log = logging.getLogger(__name__)

# What the roles do while a round is in each phase, as the round's durations name it.
PHASE_STAGES = {Phase.COMMIT: "training", Phase.VOTE: "verification", Phase.AGGREGATE: "aggregation"}


class Role(Protocol):
    def step(self, cancel: CancelToken | None = None) -> bool: ...


def run_in_turn(
    channel: RoundChannel,
    coordinator: Coordinator,
    nodes: Sequence[HospitalNode],
    archive: RoundArchive,
    cancel: CancelToken | None = None,
    *,
    on_pass: Callable[[], None] | None = None,
    max_idle_passes: int = 3,
    drivers: Sequence[Role] = (),
) -> None:
    """Steps every role until the coordinator's last round is final and archived; the time the
    roles spend in each phase goes to `archive.timings` (the round's durations)."""
    cancel = cancel or CancelToken()
    idle = 0

    def timed(step: Callable[[], bool]) -> bool:
        view = channel.current_round()
        start = time.perf_counter()
        try:
            return step()
        finally:
            if view is not None:
                stage = PHASE_STAGES.get(view.phase)
                if stage is not None:
                    spent = archive.timings.setdefault(view.attempt, {})
                    spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - start

    while True:
        cancel.raise_if_cancelled()
        acted = timed(lambda: coordinator.step(cancel))
        for node in nodes:
            acted = timed(lambda node=node: node.step(cancel)) or acted  # type: ignore[misc]
        for driver in drivers:  # the SMPC driver scores once commitments have closed
            acted = timed(lambda driver=driver: driver.step(cancel)) or acted  # type: ignore[misc]
        acted = archive.step() or acted
        if on_pass is not None:
            on_pass()
        if coordinator.done and not acted:
            return
        if acted:
            idle = 0
            continue
        deadline = coordinator.next_deadline()
        idle += 1
        if deadline is None or idle > max_idle_passes:
            raise FederationError("The federation stalled: no role has anything left to do.",
                                  detail=str(channel.current_round()))
        channel.wait_until(deadline)


def run_role(role: Role, cancel: CancelToken, *, poll_seconds: float = 1.0,
             until: Callable[[], bool] | None = None) -> None:
    """One role in a loop, polling the channel, until cancelled (or `until()` holds)."""
    while not cancel.cancelled:
        acted = role.step(cancel)
        if until is not None and until():
            return
        if not acted:
            time.sleep(poll_seconds)

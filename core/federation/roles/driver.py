"""`ScoringDriver`: the SMPC driver's part in every round, run in the coordinator's process.

Once a round's commitments close, it has the players score every candidate on every validator's
shared split (`SecureScoring`); the scores stay with the players, and each hospital node then
collects its own. It holds no hospital key and no hospital data: it reads the round from the
channel and records what it scored in its own state, so a restarted driver scores a round again
only if it had not finished it.
"""

from __future__ import annotations

import logging
from typing import Any

from core.errors import Cancelled, ServiceAway, describe_error
from core.federation.channel import COORDINATOR, Phase, RoundChannel
from core.federation.interfaces import SecureScoring
from core.federation.roles.node import MAX_TRIES, fetch_weights
from core.federation.roles.state import MemoryRoleState, RoleState
from core.progress import CancelToken, Progress, ProgressSink, Stage, ignore_progress

log = logging.getLogger(__name__)


class ScoringDriver:
    def __init__(self, channel: RoundChannel, scoring: SecureScoring, *, state: RoleState | None = None,
                 progress: ProgressSink = ignore_progress) -> None:
        self.channel = channel
        self.scoring = scoring
        self.state = state or MemoryRoleState()
        self.progress = progress
        self._doc: dict[str, Any] = self.state.load()
        self._doc.setdefault("scored", {})  # attempt -> "ok" or why scoring gave up
        self._tries: dict[int, int] = {}

    def step(self, cancel: CancelToken | None = None) -> bool:
        cancel = cancel or CancelToken()
        view = self.channel.current_round()
        if (view is None or view.phase is not Phase.VOTE or not view.verified
                or str(view.attempt) in self._doc["scored"] or self.channel.now() >= view.deadlines.vote):
            return False
        try:
            global_weights = fetch_weights(self.channel, view.previous_hash, COORDINATOR)
            self.scoring.score_round(view.round_number, view.attempt, global_weights, view.candidates,
                                     self.progress, cancel)
            verdict = "ok"
        except Cancelled:
            raise
        except ServiceAway as exc:  # a player restarting: tried again on later steps, until the deadline
            if view.attempt not in self._tries:
                log.warning("round %d: SMPC scoring waits for a player: %s", view.round_number, describe_error(exc))
                self._tries[view.attempt] = 0
            return False
        except Exception as exc:  # noqa: BLE001 - tried again, then the round goes unvoted
            tries = self._tries.get(view.attempt, 0) + 1
            self._tries[view.attempt] = tries
            message = describe_error(exc)
            log.warning("round %d: SMPC scoring failed (try %d): %s", view.round_number, tries, message)
            if tries < MAX_TRIES:
                return True
            verdict = message
            self.progress(Progress(Stage.FAILED, f"round {view.round_number}: SMPC scoring failed: {message}",
                                   round_number=view.round_number))
        self._doc["scored"][str(view.attempt)] = verdict
        self.state.save(self._doc)
        return True

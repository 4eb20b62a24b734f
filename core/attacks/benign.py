"""The round's benign updates as the omniscient attacks use them: one flat row per hospital."""

from __future__ import annotations

import logging

import numpy as np

from core.attacks.base import AttackContext
from core.models.weights import flatten

log = logging.getLogger(__name__)

MIN_BENIGN = 2  # a spread (std, pairwise distances) needs two updates


def benign_matrix(ctx: AttackContext, attack: str, *, own_is_benign: bool) -> np.ndarray | None:
    """The benign updates of the round, float64, one flattened update per row: the peers'
    (`ctx.peer_deltas`, which leave out every colluder), and, only when they are fewer than two
    and `own_is_benign` (the attacker trained on clean data), the attacker's own honest update.

    None, with a warning, when fewer than two benign updates are known: the caller then submits
    its honest update for the round.
    """
    rows = [flatten(d).astype(np.float64) for d in ctx.peer_deltas]
    if len(rows) < MIN_BENIGN and own_is_benign:
        rows.append(flatten(ctx.honest_delta).astype(np.float64))
        if len(rows) >= MIN_BENIGN:
            log.warning(
                "round %d: %s sees %d benign update(s) from other hospitals; it adds its own honest update "
                "to estimate their spread.", ctx.round_number, attack, len(ctx.peer_deltas))
    if len(rows) < MIN_BENIGN:
        log.warning(
            "round %d: %s needs the updates of at least %d benign hospitals and sees %d; it submits its "
            "honest update this round. (It runs after the honest hospitals in a simulation; too many "
            "colluders, or dropped peers, leave it too few.)",
            ctx.round_number, attack, MIN_BENIGN, len(ctx.peer_deltas))
        return None
    return np.stack(rows)

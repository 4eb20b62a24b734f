"""Use case: after a crash, mark runs whose process is gone as interrupted.

A federation or training run is written as `running` when it starts and finished in its own
transaction; a process killed in between leaves it `running` forever. Each run records the pid
and host that drive it, so a later start can tell a dead run from one still going elsewhere.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from sqlalchemy import select

from core.state.db import Database
from core.state.models import Federation, FederationStatus, Round, RoundStatus, RunStatus, TrainingRun, utcnow

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the program stopped before the run finished"


def process_marker() -> dict[str, Any]:
    """Who drives a run; stored in its config."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _alive(marker: Any) -> bool:
    if not isinstance(marker, dict) or marker.get("host") != socket.gethostname():
        return True  # another host's run, or one without a marker: not ours to judge
    pid = marker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_interrupted_runs(database: Database) -> int:
    """Marks dead `running` federations (and their open rounds) and training runs as failed;
    returns how many runs it marked."""
    marked = 0
    with database.session() as session:
        for federation in session.scalars(select(Federation).where(Federation.status == FederationStatus.RUNNING)):
            if _alive((federation.config or {}).get("process")):
                continue
            federation.status = FederationStatus.FAILED
            federation.message = INTERRUPTED
            federation.finished_at = utcnow()
            for round_ in session.scalars(select(Round).where(Round.federation_id == federation.id,
                                                              Round.status == RoundStatus.OPEN)):
                round_.status = RoundStatus.ABORTED
                round_.abort_reason = INTERRUPTED
            marked += 1
        for run in session.scalars(select(TrainingRun).where(TrainingRun.status == RunStatus.RUNNING)):
            if _alive((run.config or {}).get("process")):
                continue
            run.status = RunStatus.FAILED
            run.message = INTERRUPTED
            run.finished_at = utcnow()
            marked += 1
    if marked:
        log.warning("marked %d interrupted run(s) as failed", marked)
    return marked

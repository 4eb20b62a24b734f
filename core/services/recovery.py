"""Use case: after a crash, mark runs whose process is gone as interrupted.

A federation or training run is written as `running` when it starts and finished in its own
transaction; a process killed in between leaves it `running` forever. Each run records the pid,
start time and host of the process that drives it, so a later start can tell a dead run from one
still going elsewhere, and a live process that merely reuses a dead one's pid from the run's own.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import psutil
from sqlalchemy import select

from core.state.db import Database
from core.state.models import Federation, FederationStatus, Round, RoundStatus, RunStatus, TrainingRun, utcnow

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the program stopped before the run finished"
# psutil derives a start time from the boot time, which the system clock's adjustments can shift.
_START_TOLERANCE_S = 2.0


def process_marker() -> dict[str, Any]:
    """Who drives a run; stored in its config."""
    return {"pid": os.getpid(), "started": psutil.Process().create_time(), "host": socket.gethostname()}


def _alive(marker: Any) -> bool:
    if not isinstance(marker, dict) or marker.get("host") != socket.gethostname():
        return True  # another host's run, or one without a marker: not ours to judge
    pid = marker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return True
    if not psutil.pid_exists(pid):
        return False
    started = marker.get("started")
    if not isinstance(started, (int, float)):
        return True  # a marker from before start times were recorded: the pid is all there is
    try:
        return abs(psutil.Process(pid).create_time() - started) <= _START_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
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

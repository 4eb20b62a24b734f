"""Runs left `running` by a dead process are marked interrupted; live ones are left alone."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from core.services.recovery import mark_interrupted_runs, process_marker
from core.state.db import open_database
from core.state.queries import get_training_run, start_training_run


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_dead_runs_are_marked_and_live_or_foreign_ones_kept(tmp_path: Path) -> None:
    db = open_database(tmp_path / "state.db")
    host = socket.gethostname()
    dead = start_training_run(db, architecture="tabular_cnn", epochs=1, batch_size=8,
                              config={"process": {"pid": dead_pid(), "host": host}})
    mine = start_training_run(db, architecture="tabular_cnn", epochs=1, batch_size=8,
                              config={"process": process_marker()})
    foreign = start_training_run(db, architecture="tabular_cnn", epochs=1, batch_size=8,
                                 config={"process": {"pid": 1, "host": host + "-elsewhere"}})

    assert mark_interrupted_runs(db) == 1

    assert get_training_run(db, dead).status == "failed"
    assert "interrupted" in (get_training_run(db, dead).message or "")
    assert get_training_run(db, mine).status == "running"
    assert get_training_run(db, foreign).status == "running"
    assert mark_interrupted_runs(db) == 0  # idempotent
    db.close()

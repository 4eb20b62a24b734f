"""Runs left `running` by a dead process are marked interrupted; live ones are left alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil

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


def test_a_live_process_that_reuses_a_dead_runs_pid_does_not_keep_the_run_alive(tmp_path: Path) -> None:
    db = open_database(tmp_path / "state.db")
    host = socket.gethostname()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(other.pid).create_time()
        own = start_training_run(db, architecture="tabular_cnn", epochs=1, batch_size=8,
                                 config={"process": {"pid": other.pid, "started": started, "host": host}})
        earlier = {"pid": other.pid, "started": started - 3600, "host": host}
        reused = start_training_run(db, architecture="tabular_cnn", epochs=1, batch_size=8,
                                    config={"process": earlier})
        unmarked = start_training_run(db, architecture="tabular_cnn", epochs=1, batch_size=8,
                                      config={"process": {"pid": other.pid, "host": host}})

        assert mark_interrupted_runs(db) == 1

        assert get_training_run(db, reused).status == "failed"  # its process started an hour before this one
        assert get_training_run(db, own).status == "running"
        assert get_training_run(db, unmarked).status == "running"  # no start time recorded: the pid decides
    finally:
        other.kill()
        other.wait()
        db.close()


def test_the_marker_names_this_process_and_when_it_started() -> None:
    marker = process_marker()

    assert marker["pid"] == os.getpid() and marker["host"] == socket.gethostname()
    assert abs(marker["started"] - psutil.Process().create_time()) < 1e-6

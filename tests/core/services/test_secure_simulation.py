"""`simulate --secure` end to end: the SMPC run decides exactly as the plaintext run, and a
player killed mid-round aborts that round attempt cleanly; the next attempt, with the player
back, finalises it."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from core.progress import Progress, Stage
from core.services.simulation import SimulationConfig, run_simulation
from core.settings import load_settings
from core.state.db import open_database
from core.state.queries import list_rounds

pytestmark = pytest.mark.slow


def statuses(report: dict[str, Any]) -> list[list[tuple[str, str]]]:
    return [[(m["hospital"], m["status"]) for m in r["models"]] for r in report["rounds"]]


def shape(value: Any) -> Any:
    """The JSON report's structure without its values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k not in ("config",)}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def test_secure_run_matches_the_plaintext_run(tmp_path: Path) -> None:
    common: dict[str, Any] = {"hospitals": 5, "malicious": 2, "attack": "label_flip", "rounds": 2,
                              "dataset": "breast_cancer", "seed": 0, "ledger": False}
    plain = run_simulation(SimulationConfig(**common), load_settings(home=tmp_path / "plain"))
    secure = run_simulation(SimulationConfig(secure=True, **common), load_settings(home=tmp_path / "secure"))

    assert statuses(secure) == statuses(plain)
    assert abs(secure["final_accuracy"] - plain["final_accuracy"]) <= 0.01
    assert shape(secure) == shape(plain)
    for row in secure["rounds"]:
        for model in row["models"]:
            assert model["status"] == ("rejected" if model["malicious"] else "accepted")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_player_killed_mid_round_aborts_it_cleanly_and_the_retry_succeeds(tmp_path: Path) -> None:
    from tests.smpc.test_remote import Players

    players_file = tmp_path / "players.json"
    players_file.write_text(json.dumps({
        "job": "medfedchain",
        "players": {name: f"127.0.0.1:{_free_port()}" for name in ("alpha", "beta", "gamma")},
        "driver": f"127.0.0.1:{_free_port()}",
    }))
    group = Players(players_file)
    for name in ("alpha", "beta", "gamma"):
        group.start(name)
    try:
        for name in ("alpha", "beta", "gamma"):
            group.wait_ready(name)
        settings = load_settings(home=tmp_path / "home", smpc_players=players_file)
        config = SimulationConfig(hospitals=3, malicious=1, attack="noise", rounds=2, secure=True,
                                  ledger=False, local_epochs=2)
        seen: dict[str, Any] = {"killed": False, "aborts": []}

        def kill_then_restart(event: Progress) -> None:
            # Kill a player while round 2 is being verified; once the round is aborted for it,
            # bring the player back, so the round's next attempt can succeed.
            if (event.stage is Stage.VERIFICATION and event.round_number == 2 and event.fraction == 0.0
                    and not seen["killed"]):
                seen["killed"] = True
                group.kill("beta")
            elif event.stage is Stage.FAILED and "aborted" in event.message:
                seen["aborts"].append(event.message)
                group.start("beta")
                group.wait_ready("beta")

        report = run_simulation(config, settings, kill_then_restart)
        assert seen["killed"] and len(seen["aborts"]) == 1
        assert "round 2 aborted" in seen["aborts"][0] and "verification could not run" in seen["aborts"][0]
        assert [r["round"] for r in report["rounds"]] == [1, 2]
        assert sorted(report["rounds"][1]["contributors"]) == ["hospital-1", "hospital-2"]
        db = open_database(settings.db_path)
        try:
            by_number = {r.number: r for r in list_rounds(db, report["federation_id"])}
            assert by_number[1].status == "finalized" and by_number[2].status == "finalized"
            assert by_number[2].global_hash == report["rounds"][1]["global_hash"]
        finally:
            db.close()
    finally:
        group.stop_all()

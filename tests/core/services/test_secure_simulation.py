"""`simulate --secure` end to end: the SMPC run decides exactly as the plaintext run (a player
killed mid-round is tested where players are processes: tests/test_secure_deployment.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.services.simulation import SimulationConfig, run_simulation
from core.settings import load_settings

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

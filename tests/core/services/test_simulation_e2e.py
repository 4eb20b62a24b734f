"""End to end on the real Wisconsin breast-cancer data: 2 of 5 hospitals attack and vote
dishonestly; verification must reject every attacker, accept every honest hospital, and keep
the accuracy of the attack-free federation, while unprotected FedAvg is hurt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.services.simulation import SimulationConfig, run_simulation
from core.settings import load_settings

pytestmark = pytest.mark.slow

ROUNDS = 3


def simulate(home: Path, **kwargs: Any) -> dict[str, Any]:
    config = SimulationConfig(hospitals=5, rounds=ROUNDS, dataset="breast_cancer", seed=0, ledger=False, **kwargs)
    return run_simulation(config, load_settings(home=home))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return simulate(tmp_path_factory.mktemp("baseline"))


def test_attack_free_federation_accepts_everyone_and_learns(baseline: dict[str, Any]) -> None:
    summary = baseline["summary"]
    assert summary["honest_rejected"] == 0
    assert summary["honest_accepted"] == 5 * ROUNDS
    assert baseline["final_accuracy"] > 0.9
    assert baseline["final_accuracy"] > baseline["initial_accuracy"] + 0.3


@pytest.mark.parametrize("attack", ["label_flip", "sign_flip", "scaling", "noise"])
def test_verification_rejects_every_attacker_and_keeps_accuracy(
    attack: str, baseline: dict[str, Any], tmp_path: Path
) -> None:
    report = simulate(tmp_path, malicious=2, attack=attack)

    for row in report["rounds"]:
        for model in row["models"]:
            expected = "rejected" if model["malicious"] else "accepted"
            assert model["status"] == expected, (attack, row["round"], model["hospital"], model["scores"])
            if model["malicious"]:
                # the two colluders accepted each other; every honest validator refused
                assert model["votes"] == {f"hospital-{i}": "reject" for i in (1, 2, 3)} | {
                    "hospital-4": "accept", "hospital-5": "accept"}
    assert {m["hospital"] for r in report["rounds"] for m in r["models"] if m["malicious"]} == {
        "hospital-4", "hospital-5"}
    assert abs(report["final_accuracy"] - baseline["final_accuracy"]) <= 0.02


def test_unprotected_fedavg_under_scaling_ends_at_least_ten_points_lower(
    baseline: dict[str, Any], tmp_path: Path
) -> None:
    report = simulate(tmp_path, malicious=2, attack="scaling", verifier="none")

    assert report["summary"]["malicious_accepted"] == 2 * ROUNDS
    assert report["final_accuracy"] <= baseline["final_accuracy"] - 0.10


def test_a_boosted_backdoor_is_rejected_on_images_and_unprotected_it_takes_hold(tmp_path: Path) -> None:
    common: dict[str, Any] = {"hospitals": 5, "malicious": 2, "attack": "backdoor", "rounds": 2,
                              "attack_params": {"boost": 5.0}, "dataset": "synthetic_images", "seed": 0,
                              "ledger": False}
    settings = load_settings(home=tmp_path)
    protected = run_simulation(SimulationConfig(**common), settings)
    unprotected = run_simulation(SimulationConfig(verifier="none", **common), settings)

    for row in protected["rounds"]:
        for model in row["models"]:
            assert model["status"] == ("rejected" if model["malicious"] else "accepted")
    assert protected["rounds"][-1]["metrics"]["backdoor_success"] < 0.3
    assert unprotected["rounds"][-1]["metrics"]["backdoor_success"] > 0.5
    assert protected["final_accuracy"] > unprotected["final_accuracy"] + 0.2

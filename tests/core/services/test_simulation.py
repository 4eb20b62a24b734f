"""The simulation use case: each baseline aggregator runs, and state goes where it is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.services.simulation import SimulationConfig, run_simulation
from core.settings import load_settings
from core.state.db import open_database
from core.state.queries import list_federations, list_rounds


@pytest.mark.parametrize("aggregator", ["fedavg", "krum", "median", "trimmed_mean", "fltrust"])
def test_each_aggregator_runs_a_round_and_is_recorded(aggregator: str, tmp_path: Path) -> None:
    config = SimulationConfig(hospitals=4, malicious=1, attack="noise", rounds=1, aggregator=aggregator,
                              verifier="none", local_epochs=2, ledger=False)
    report = run_simulation(config, load_settings(home=tmp_path))

    assert 0.0 <= report["final_accuracy"] <= 1.0
    assert report["final_accuracy"] > report["initial_accuracy"] - 0.05
    db = open_database(tmp_path / "medfedchain.db")
    (federation,) = list_federations(db)
    assert federation.config["aggregator"] == aggregator
    (round_,) = list_rounds(db, federation.id)
    assert round_.status == "finalized" and round_.global_hash == report["rounds"][0]["global_hash"]
    db.close()


def test_a_hospital_holding_one_class_takes_part_in_a_skewed_federation(tmp_path: Path) -> None:
    config = SimulationConfig(hospitals=5, rounds=1, partition="dirichlet", alpha=1.0, seed=0,
                              local_epochs=2, ledger=False)
    report = run_simulation(config, load_settings(home=tmp_path))

    from core.data.builtin import breast_cancer
    from core.data.partition import partition

    split = partition(breast_cancer(), 5, scheme="dirichlet", alpha=1.0, seed=0)
    one_class = [h.hospital_id for h in split.hospitals if min(h.train.class_counts().values()) == 0]
    assert one_class, "the seed no longer produces a one-class hospital; pick another"
    models = {m["hospital"]: m for m in report["rounds"][0]["models"]}
    assert set(models) == {f"hospital-{i}" for i in range(1, 6)}
    assert report["rounds"][0]["failures"] == []


def test_db_override_puts_only_the_database_elsewhere(tmp_path: Path) -> None:
    elsewhere = tmp_path / "other" / "state.db"
    settings = load_settings(home=tmp_path / "home", db=elsewhere)
    run_simulation(SimulationConfig(hospitals=2, rounds=1, local_epochs=1, ledger=False), settings)
    assert elsewhere.is_file()
    assert not (tmp_path / "home" / "medfedchain.db").exists()


@pytest.mark.parametrize(
    "kwargs",
    [{"hospitals": 0}, {"malicious": 1}, {"rounds": 0}, {"partition": "random"}, {"aggregator": "mean"},
     {"verifier": "smpc"}, {"secure": True, "aggregator": "median"}, {"learning_rate": 3.0}],
)
def test_bad_configurations_are_refused_before_any_work(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SimulationConfig(**kwargs)  # type: ignore[arg-type]


def test_a_later_run_in_the_same_home_continues_the_ledgers_rounds(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    first = run_simulation(SimulationConfig(hospitals=3, rounds=1, local_epochs=1), settings)
    second = run_simulation(SimulationConfig(hospitals=3, rounds=2, local_epochs=1), settings)
    assert [r["round"] for r in first["rounds"]] == [1]
    assert [r["round"] for r in second["rounds"]] == [2, 3]  # two more rounds, as asked
    assert second["rounds"][0]["previous_hash"] == first["rounds"][0]["global_hash"]
    assert second["initial_accuracy"] == pytest.approx(first["final_accuracy"])


def test_a_home_whose_ledger_trains_another_model_is_refused_clearly(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    run_simulation(SimulationConfig(hospitals=3, rounds=1, local_epochs=1), settings)
    with pytest.raises(ConfigError, match="another model"):
        run_simulation(SimulationConfig(hospitals=3, rounds=1, local_epochs=1, dataset="synthetic_images"), settings)
    db = open_database(settings.db_path)
    statuses = sorted((f.status, "another model" in (f.message or "")) for f in list_federations(db))
    db.close()
    assert statuses == [("completed", False), ("failed", True)]
    again = run_simulation(SimulationConfig(hospitals=3, rounds=1, local_epochs=1), settings)  # nothing left held
    assert [r["round"] for r in again["rounds"]] == [2]

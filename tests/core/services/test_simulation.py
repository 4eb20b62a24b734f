"""The simulation use case: each baseline aggregator runs, and state goes where it is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError, describe_error
from core.services.simulation import SimulationConfig, run_simulation, trigger_metric
from core.settings import Settings, load_settings
from core.state.models import FederationStatus
from core.state.db import open_database
from core.state.queries import list_federations, list_rounds
from tests.core.data.medmnist_sample import medmnist_arrays, save


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


@pytest.mark.parametrize(("name", "rgb", "classes", "side"),
                         [("pneumoniamnist", False, 2, 28), ("pathmnist_64", True, 9, 64)])
def test_a_medmnist_file_as_downloaded_runs_a_federation(name: str, rgb: bool, classes: int, side: int,
                                                         tmp_path: Path) -> None:
    path = save(tmp_path, medmnist_arrays(rgb, (180, 27, 45), classes=classes, side=side), f"{name}.npz")

    report = run_simulation(SimulationConfig(hospitals=3, rounds=1, local_epochs=1, dataset=str(path),
                                             ledger=False), load_settings(home=tmp_path / "home"))

    assert report["status"] == "completed"
    assert report["dataset"]["input_shape"] == [side, side, 3 if rgb else 1]
    assert report["dataset"]["num_classes"] == classes and report["dataset"]["samples"] == 252
    assert sorted(m["hospital"] for m in report["rounds"][0]["models"]) == ["hospital-1", "hospital-2",
                                                                             "hospital-3"]
    assert 0.0 <= report["final_accuracy"] <= 1.0


def test_db_override_puts_only_the_database_elsewhere(tmp_path: Path) -> None:
    elsewhere = tmp_path / "other" / "state.db"
    settings = load_settings(home=tmp_path / "home", db=elsewhere)
    run_simulation(SimulationConfig(hospitals=2, rounds=1, local_epochs=1, ledger=False), settings)
    assert elsewhere.is_file()
    assert not (tmp_path / "home" / "medfedchain.db").exists()


@pytest.mark.parametrize(
    "kwargs",
    [{"hospitals": 0}, {"malicious": 1}, {"rounds": 0}, {"partition": "random"}, {"aggregator": "mean"},
     {"verifier": "smpc"}, {"secure": True, "aggregator": "median"}, {"learning_rate": 3.0},
     {"partition": "iid", "alpha": 0.3}, {"rpc_url": "ftp://x"}],
)
def test_bad_configurations_are_refused_before_any_work(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SimulationConfig(**kwargs)  # type: ignore[arg-type]


def test_a_trigger_asked_for_is_measured_as_its_attack_measures_it(tmp_path: Path) -> None:
    # An attacked run asked for its own trigger by name (and constrain_scale's, the same trigger):
    # the two measures test one model on one triggered test set.
    config = SimulationConfig(hospitals=4, malicious=1, attack="backdoor", rounds=1, verifier="none",
                              local_epochs=2, ledger=False, measure_triggers=("backdoor", "constrain_scale"))

    metrics = run_simulation(config, load_settings(home=tmp_path))["rounds"][-1]["metrics"]

    assert metrics["backdoor_success"] > 0.0
    assert metrics[trigger_metric("backdoor")] == metrics[trigger_metric("constrain_scale")] \
        == metrics["backdoor_success"]


def test_measuring_the_trigger_of_an_attack_that_plants_none_is_refused(tmp_path: Path) -> None:
    config = SimulationConfig(hospitals=3, rounds=1, local_epochs=1, ledger=False,
                              measure_triggers=("sign_flip",))

    with pytest.raises(ConfigError, match="'sign_flip' plants no trigger"):
        run_simulation(config, load_settings(home=tmp_path))


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


def test_alpha_is_only_taken_with_the_dirichlet_partition() -> None:
    with pytest.raises(ConfigError, match="--alpha"):
        SimulationConfig(partition="iid", alpha=0.3)
    assert SimulationConfig(partition="dirichlet").dirichlet_alpha == 0.5
    assert SimulationConfig(partition="dirichlet", alpha=2.0).as_dict()["alpha"] == 2.0


@pytest.mark.parametrize(("hospitals", "malicious", "warned"),
                         [(3, 3, True), (3, 2, True), (4, 2, True), (2, 1, True), (5, 2, False),
                          (3, 1, False), (4, 0, False)])
def test_a_majority_of_attackers_is_warned_of(hospitals: int, malicious: int, warned: bool) -> None:
    config = SimulationConfig(hospitals=hospitals, malicious=malicious,
                              attack="noise" if malicious else "none")
    warnings = config.warnings()
    assert bool(warnings) is warned
    if warned:
        assert f"{malicious} of the {hospitals} hospitals are malicious" in warnings[0]
        assert "fewer than half" in warnings[0]


def _runs(settings: Settings) -> list[tuple[str, str | None]]:
    """Every federation run of the home as (status, message), after the next start's crash check."""
    from core.services.recovery import mark_interrupted_runs

    db = open_database(settings.db_path)
    try:
        assert mark_interrupted_runs(db) == 0  # nothing is left for the next start to relabel
        return [(f.status, f.message) for f in sorted(list_federations(db), key=lambda f: f.id)]
    finally:
        db.close()


def test_a_wrong_keystore_password_fails_the_run_with_its_reason(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(home=tmp_path)
    monkeypatch.setenv("MEDFED_KEYSTORE_PASSWORD", "the first secret")
    run_simulation(SimulationConfig(hospitals=2, rounds=1, local_epochs=1), settings)
    monkeypatch.setenv("MEDFED_KEYSTORE_PASSWORD", "another secret")

    with pytest.raises(Exception, match="password is wrong"):
        run_simulation(SimulationConfig(hospitals=2, rounds=1, local_epochs=1), settings)

    (_, first), (status, message) = _runs(settings)
    assert status == "failed" and message and "password is wrong" in message


def test_a_chain_held_by_another_run_fails_the_run_with_its_reason(tmp_path: Path) -> None:
    from core.services.simulation import prepare_federation

    settings = load_settings(home=tmp_path)
    holder = prepare_federation(SimulationConfig(hospitals=2, rounds=1, local_epochs=1), settings)
    try:
        with pytest.raises(Exception) as refused:
            run_simulation(SimulationConfig(hospitals=2, rounds=1, local_epochs=1), settings)
    finally:
        holder.sqlite.finish(FederationStatus.CANCELLED, message="the test's holder")
        holder.close()
    (_, _), (status, message) = _runs(settings)
    assert status == "failed" and message == describe_error(refused.value)
    assert message and "Error:" not in message  # the ledger's own message, not a raw exception


def test_an_unreachable_node_fails_the_run_with_its_reason(tmp_path: Path) -> None:
    from ledger.anvil import free_port

    settings = load_settings(home=tmp_path)
    with pytest.raises(Exception, match="cannot be reached"):
        run_simulation(SimulationConfig(hospitals=2, rounds=1, local_epochs=1,
                                        rpc_url=f"http://127.0.0.1:{free_port()}"), settings)
    ((status, message),) = _runs(settings)
    assert status == "failed" and message and "cannot be reached" in message


def test_an_error_of_any_kind_mid_run_fails_the_run_with_its_reason(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)

    def show(_row: dict[str, object]) -> None:
        raise RuntimeError("the report window was closed")

    with pytest.raises(RuntimeError):
        run_simulation(SimulationConfig(hospitals=2, rounds=2, local_epochs=1, ledger=False), settings,
                       on_round=show)
    ((status, message),) = _runs(settings)
    assert status == "failed" and message and "the report window was closed" in message

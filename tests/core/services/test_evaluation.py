"""The evaluation use case: the matrix it runs, the cells it writes, and resuming a stopped run."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.attacks.registry import attack_names
from core.errors import Cancelled, ConfigError, CoreError, DataError
from core.progress import CancelToken, Progress
from core.services import evaluation
from core.services.evaluation import DEFENCES, FORMAT, EvaluationDone, EvaluationMatrix, run_evaluation

REQUIRED = ("dataset", "partition", "attack", "defence", "malicious_fraction", "seed", "final_accuracy",
            "reference_accuracy", "clean_accuracy", "poisoned_accepted", "honest_rejected",
            "backdoor_success", "reference_backdoor_success")


def tiny(**changes: Any) -> EvaluationMatrix:
    """One round of five breast-cancer hospitals, two of them sign-flipping: seconds per federation."""
    base: dict[str, Any] = {"datasets": ("breast_cancer",), "attacks": ("sign_flip",),
                            "defences": ("verification", "fedavg"), "rounds": 1, "local_epochs": 2}
    return EvaluationMatrix(**(base | changes))


def test_all_selects_every_built_in_attack_and_defence() -> None:
    matrix = EvaluationMatrix(datasets=("breast_cancer",), attacks=("all",), defences=("all",),
                              partitions=("iid", "dirichlet"), seeds=(0, 1, 2))
    assert matrix.attacks == tuple(attack_names())
    assert matrix.defences == DEFENCES == ("verification", "fedavg", "krum", "median", "trimmed_mean", "fltrust")
    assert len(matrix.cells()) == len(attack_names()) * 6 * 2 * 3
    assert matrix.attackers(0.4) == 2


@pytest.mark.parametrize(("changes", "message"), [
    ({"defences": ("magic",)}, "Unknown defence 'magic'"),
    ({"attacks": ("nope",)}, "Unknown attack 'nope'"),
    ({"malicious_fractions": (0.05,)}, "makes 0 attackers"),
    ({"malicious_fractions": (1.0,)}, "strictly between 0 and 1"),
    ({"partitions": ("random",)}, "Unknown partition 'random'"),
    ({"seeds": (-1,)}, "Seeds must be integers"),
    ({"rounds": 0}, "number of rounds"),
    ({"alpha": 0.0}, "alpha must be a positive"),
])
def test_a_bad_matrix_is_refused_before_anything_runs(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny(**changes)


def test_cells_measure_each_defence_against_its_reference_and_resume(tmp_path: Path) -> None:
    # Stopped after the first cell: it stays saved, the second is not there.
    cancel = CancelToken()

    def stop_after_first(event: Progress) -> None:
        if event.values.get("cells_done") == 1:
            cancel.cancel()

    with pytest.raises(Cancelled):
        run_evaluation(tiny(), tmp_path, progress=stop_after_first, cancel=cancel)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["format"] == FORMAT and [c["defence"] for c in saved["cells"]] == ["verification"]

    done = run_evaluation(tiny(), tmp_path)
    assert (done.skipped, done.ran) == (1, 1)  # the baselines were kept too: only fedavg's federation ran
    verified, averaged = done.results["cells"]
    assert verified == saved["cells"][0]
    for cell in (verified, averaged):
        assert all(key in cell for key in REQUIRED)
        assert (cell["malicious"], cell["poisoned_total"], cell["honest_total"]) == (2, 2, 3)
        assert cell["backdoor_success"] is None  # sign flipping plants no trigger
        assert cell["reference_accuracy"] == verified["reference_accuracy"]
    # What a user reads the table for: verification rejects both flipped updates and keeps the
    # reference's accuracy; plain FedAvg takes them and loses it.
    assert verified["poisoned_accepted"] == 0 and verified["honest_rejected"] == 0
    assert verified["final_accuracy"] >= verified["reference_accuracy"] - 0.05
    assert averaged["poisoned_accepted"] == 2
    assert averaged["final_accuracy"] < verified["final_accuracy"] - 0.2
    assert {s["hospital"] for s in verified["statuses"] if s["status"] == "rejected"} == {"hospital-4", "hospital-5"}

    # Widening the matrix runs only what is new.
    wider = run_evaluation(tiny(defences=("verification", "fedavg", "median")), tmp_path)
    assert (wider.skipped, wider.ran) == (2, 1)
    assert [c["defence"] for c in wider.results["cells"]] == ["verification", "fedavg", "median"]


def test_resuming_with_other_run_parameters_is_refused(tmp_path: Path) -> None:
    held = {"format": FORMAT, "matrix": tiny().as_dict(), "policy": evaluation.VerificationPolicy().as_dict(),
            "cells": [], "baselines": {}}
    (tmp_path / "results.json").write_text(json.dumps(held))
    with pytest.raises(ConfigError, match="other parameters \\(rounds\\)"):
        run_evaluation(tiny(rounds=3), tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == held


def test_a_damaged_results_file_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"cells": [')
    with pytest.raises(ConfigError, match="not a readable results file"):
        run_evaluation(tiny(), tmp_path)
    assert (tmp_path / "results.json").read_text() == '{"cells": ['


def test_a_failing_cell_is_recorded_and_run_again_on_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = evaluation.run_simulation

    def failing_for_fedavg(config: Any, settings: Any, **kwargs: Any) -> dict[str, Any]:
        if config.malicious and config.aggregator == "fedavg" and config.verifier == "none":
            raise DataError("the hospital's disk went away")
        return real(config, settings, **kwargs)

    monkeypatch.setattr(evaluation, "run_simulation", failing_for_fedavg)
    done = run_evaluation(tiny(), tmp_path)
    assert len(done.failed) == 1 and "disk went away" in done.failed[0]
    assert [bool(c.get("error")) for c in done.results["cells"]] == [False, True]

    monkeypatch.setattr(evaluation, "run_simulation", real)
    again = run_evaluation(tiny(), tmp_path)
    assert (again.skipped, again.failed) == (1, [])
    assert not any(c.get("error") for c in again.results["cells"])


def test_an_unknown_dataset_fails_before_any_federation(tmp_path: Path) -> None:
    with pytest.raises(CoreError, match="nor a built-in dataset"):
        run_evaluation(tiny(datasets=("no_such_dataset",)), tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_a_trigger_is_also_measured_on_the_reference_and_older_files_get_it_on_resume(tmp_path: Path) -> None:
    # Diabetes: unlike breast cancer's, its trigger (three features at +4 standard deviations) is
    # no evidence for the target class, so an attacker-free model rarely answers it.
    matrix = tiny(datasets=("diabetes",), attacks=("backdoor", "sign_flip"), defences=("fedavg", "median"))
    first = run_evaluation(matrix, tmp_path)
    backdoored, _, flipped, _ = first.results["cells"]
    (tag,) = [t for t in first.results["baselines"] if t.startswith("reference|")]
    assert first.ran == 6  # clean, reference (measuring the trigger for every cell), four attacked
    assert first.results["baselines"][tag]["backdoor_success"] == {
        "backdoor": backdoored["reference_backdoor_success"]}
    # What the column is for: the attacker-free model answers the trigger with the target less often.
    assert 0.0 <= backdoored["reference_backdoor_success"] < backdoored["backdoor_success"]
    assert flipped["reference_backdoor_success"] is None  # sign flipping plants no trigger

    def resume_older(change_reference: Callable[[dict[str, Any]], None]) -> EvaluationDone:
        """Resumes the first run's file as an older version wrote it: no reference_backdoor_success."""
        older = copy.deepcopy(first.results)
        for cell in older["cells"]:
            del cell["reference_backdoor_success"]
        change_reference(older["baselines"][tag])
        (tmp_path / "results.json").write_text(json.dumps(older))
        return run_evaluation(matrix, tmp_path)

    # The reference entry measured the trigger already: the cells are filled without any run.
    kept = resume_older(lambda reference: None)
    assert (kept.ran, kept.skipped, kept.results) == (0, 4, first.results)

    # It did not: the reference federation alone runs again, and gives the same cells.
    rerun = resume_older(lambda reference: reference.pop("backdoor_success"))
    assert (rerun.ran, rerun.failed, rerun.results) == (1, [], first.results)

    # A reference that does not reproduce the held one is not measured (the trigger would be
    # another model's), and is run once for all its cells.
    def other_run(reference: dict[str, Any]) -> None:
        reference.pop("backdoor_success")
        reference["accuracy_per_round"] = [0.5]

    refused = resume_older(other_run)
    assert refused.ran == 1 and len(refused.failed) == 2 and "did not reproduce" in refused.failed[0]
    saved = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert [c.get("reference_backdoor_success", "-") for c in saved] == ["-", "-", None, None]
    assert [c["final_accuracy"] for c in saved] == [c["final_accuracy"] for c in first.results["cells"]]

"""The evaluation report: results.csv, the figures and the self-contained report.html, from full,
partial and empty results, with the goal marked as the numbers say."""

from __future__ import annotations

import base64
import copy
import csv
import html
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core.errors import ConfigError
from core.evaluation.report import ReportFiles, markdown_table, summary_rows, write_report
from core.evaluation.summary import comparison_table, reach_table

DATASETS = ["breast_cancer", "diabetes"]
ATTACKS = ["scaling", "backdoor"]
DEFENCES = ["verification", "fedavg", "krum"]
PARTITIONS = ["iid", "dirichlet"]
SEEDS = [0, 1]
HOSPITALS = [f"hospital-{i}" for i in range(1, 6)]
ATTACKERS = {"hospital-4", "hospital-5"}
ROUNDS = 3
WHEN = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def cell(dataset: str, partition: str, attack: str, defence: str, seed: int) -> dict[str, Any]:
    """A plausible cell: verification close to the reference, krum 3 points below it, fedavg
    poisoned; the verification rejects the attackers (and, under Dirichlet, one honest model)."""
    reference = 0.90 + 0.01 * DATASETS.index(dataset) + 0.01 * seed
    final = {"verification": reference - 0.002, "krum": reference - 0.03, "fedavg": 0.55}[defence]
    verified = defence == "verification"
    statuses = [
        {"round": r, "hospital": h, "malicious": h in ATTACKERS,
         "status": "rejected" if verified and h in ATTACKERS else "accepted"}
        for r in range(1, ROUNDS + 1) for h in HOSPITALS
    ]
    honest_rejected = 0
    if verified and partition == "dirichlet":
        statuses[0]["status"] = "rejected"  # hospital-1, round 1
        honest_rejected = 1
    if verified and seed == 0:
        statuses[6]["status"] = "failed"  # hospital-2, round 2
    return {
        "dataset": dataset, "partition": partition, "alpha": 0.5 if partition == "dirichlet" else None,
        "attack": attack, "defence": defence, "malicious_fraction": 0.4, "hospitals": 5, "malicious": 2,
        "seed": seed, "rounds": ROUNDS, "final_accuracy": final, "reference_accuracy": reference,
        "clean_accuracy": reference + 0.01,
        "poisoned_accepted": 0 if verified else 6, "poisoned_total": 6,
        "honest_rejected": honest_rejected, "honest_total": 9,
        "backdoor_success": ({"verification": 0.02, "krum": 0.3, "fedavg": 0.9}[defence]
                             if attack == "backdoor" else None),
        # The reference federation's answer to the trigger: the same for every defence.
        "reference_backdoor_success": [0.05, 0.15][seed] if attack == "backdoor" else None,
        "accuracy_per_round": [final - 0.1, final - 0.05, final],
        "statuses": statuses, "seconds": 1.5,
    }


def make_results() -> dict[str, Any]:
    cells = [cell(d, p, a, f, s) for d in DATASETS for p in PARTITIONS for a in ATTACKS for f in DEFENCES
             for s in SEEDS]
    results = {
        "format": "medfedchain-evaluation/1",
        "matrix": {"datasets": DATASETS, "attacks": ATTACKS, "defences": DEFENCES,
                   "malicious_fractions": [0.4], "partitions": PARTITIONS, "alpha": 0.5, "rounds": ROUNDS,
                   "seeds": SEEDS, "hospitals": 5},
        "cells": cells,
    }
    # Met: breast_cancer / IID / scaling, final 95.0 and 96.0 against a reference of 95.5 and 96.5.
    for defence in DEFENCES:
        for c in find(results, "breast_cancer", "iid", "scaling", defence):
            c["reference_accuracy"] = [0.955, 0.965][c["seed"]]
    for c in find(results, "breast_cancer", "iid", "scaling", "verification"):
        c["final_accuracy"] = [0.95, 0.96][c["seed"]]
    # Not met: the backdoor gets through on diabetes / IID (40 % and 60 %).
    for c in find(results, "diabetes", "iid", "backdoor", "verification"):
        c["backdoor_success"] = [0.4, 0.6][c["seed"]]
    # Not met: krum beats the verification on diabetes / Dirichlet / scaling (still near the reference).
    for c in find(results, "diabetes", "dirichlet", "scaling", "krum"):
        c["final_accuracy"] = c["reference_accuracy"]
    return results


def find(results: dict[str, Any], dataset: str, partition: str, attack: str, defence: str) -> list[dict]:
    return [c for c in results["cells"] if (c["dataset"], c["partition"], c["attack"], c["defence"])
            == (dataset, partition, attack, defence)]


def table_row(page: str, *values: str) -> list[str]:
    """The texts of the one summary-table row of report.html whose leading cells are `values`."""
    found = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page):
        texts = [html.unescape(re.sub(r"<[^>]+>", "", td)) for td in re.findall(r"<td[^>]*>.*?</td>", row)]
        if texts[:len(values)] == list(values):
            found.append(texts)
    assert len(found) == 1, found
    return found[0]


HEADERS = ["Dataset", "Partition", "Attack", "Malicious", "Defence", "Seeds", "Final (%)", "Reference (%)",
           "Clean (%)", "Gap (pts)", "Poisoned accepted", "Honest rejected", "Backdoor (%)",
           "Backdoor without attackers (%)", "Goal", "Goal of a perfect filter"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return write_report(make_results(), tmp_path_factory.mktemp("report"), generated_at=WHEN)


def test_the_csv_has_a_header_and_one_row_per_cell(report: ReportFiles) -> None:
    with report.csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    assert len(rows) == 2 * 2 * 2 * 3 * 2
    assert list(rows[0])[:6] == ["dataset", "partition", "alpha", "attack", "defence", "malicious_fraction"]
    assert "statuses" not in rows[0] and "accuracy_per_round" not in rows[0]
    assert (rows[0]["dataset"], rows[0]["alpha"], rows[0]["final_accuracy"]) == ("breast_cancer", "", "0.95")
    assert {r["backdoor_success"] for r in rows if r["attack"] == "scaling"} == {""}
    assert list(rows[0])[list(rows[0]).index("backdoor_success") + 1] == "reference_backdoor_success"
    assert {r["reference_backdoor_success"] for r in rows if r["attack"] == "backdoor"} == {"0.05", "0.15"}


def test_each_figure_is_a_png_of_a_readable_size(report: ReportFiles) -> None:
    assert sorted(p.name for p in report.figures) == [
        "accuracy-breast_cancer.png", "accuracy-diabetes.png", "status-breast_cancer.png",
        "status-diabetes.png", "status-ratio.png",
    ]
    for path in report.figures:
        assert path.parent == report.html.parent / "figures"
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG"
            assert image.width >= 600 and image.height >= 300


def test_the_page_is_self_contained_and_embeds_every_figure(report: ReportFiles) -> None:
    page = report.html.read_text(encoding="utf-8")

    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    assert re.findall(r'src="([^"]*)"', page) == [
        "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for p in report.figures
    ]
    assert "2026-01-02 03:04" in page


@pytest.mark.gui
def test_qt_text_browsers_show_the_embedded_figures(report: ReportFiles, qapp: object) -> None:
    from PySide6.QtCore import QUrl
    from PySide6.QtGui import QTextDocument

    page = report.html.read_text(encoding="utf-8")
    document = QTextDocument()
    document.setHtml(page)

    for path, source in zip(report.figures, re.findall(r'src="([^"]*)"', page), strict=True):
        shown = document.resource(QTextDocument.ResourceType.ImageResource, QUrl(source))
        with Image.open(path) as image:
            assert (shown.width(), shown.height()) == image.size
    assert "Figure 5. Share of poisoned updates rejected" in document.toPlainText()


def test_the_summary_shows_means_over_seeds_and_the_goal(report: ReportFiles) -> None:
    page = report.html.read_text(encoding="utf-8")

    met = table_row(page, "breast_cancer", "IID", "scaling", "40%", "verification")
    # Final accuracy 95.0 and 96.0 %: mean 95.5, sample standard deviation 0.7.
    assert met[HEADERS.index("Final (%)")] == "95.5 ± 0.7"
    assert met[HEADERS.index("Reference (%)")] == "96.0 ± 0.7"
    assert met[HEADERS.index("Gap (pts)")] == "-0.5"
    assert met[HEADERS.index("Poisoned accepted")] == "0/12"
    assert met[HEADERS.index("Goal")] == "met"

    backdoored = table_row(page, "diabetes", "IID", "backdoor", "40%", "verification")
    assert backdoored[HEADERS.index("Backdoor (%)")] == "50.0 ± 14.1"
    assert backdoored[HEADERS.index("Backdoor without attackers (%)")] == "10.0 ± 7.1"
    assert backdoored[HEADERS.index("Goal")] == "not met: backdoor 50% > 5% (attacker-free: 10%)"
    scaled = table_row(page, "diabetes", "IID", "scaling", "40%", "verification")
    assert scaled[HEADERS.index("Backdoor without attackers (%)")] == "–"

    beaten = table_row(page, "diabetes", "Dirichlet α=0.5", "scaling", "40%", "verification")
    assert beaten[HEADERS.index("Goal")] == "not met: below krum"

    baseline = table_row(page, "breast_cancer", "IID", "scaling", "40%", "fedavg")
    assert baseline[HEADERS.index("Poisoned accepted")] == "12/12" and baseline[HEADERS.index("Goal")] == ""


def verification_row(results: dict[str, Any], dataset: str, partition: str, attack: str) -> dict[str, Any]:
    return next(r for r in summary_rows(results) if (r["dataset"], r["partition"], r["attack"], r["defence"])
                == (dataset, partition, attack, "verification"))


def test_summary_rows_aggregate_per_setting_and_defence() -> None:
    rows = summary_rows(make_results())

    assert len(rows) == 2 * 2 * 2 * 3
    assert [r["defence"] for r in rows[:3]] == DEFENCES
    by_key = {(r["dataset"], r["partition"], r["attack"], r["defence"]): r for r in rows}
    met = by_key[("breast_cancer", "iid", "scaling", "verification")]
    assert met["final_mean"] == pytest.approx(0.955) and met["seeds"] == 2
    assert met["goal"] is True and met["goal_missed"] == []
    # One honest model rejected per seed under Dirichlet: allowed, the goal asks it under IID only.
    skewed = by_key[("breast_cancer", "dirichlet", "scaling", "verification")]
    assert skewed["honest_rejected"] == 2 and skewed["goal"] is True
    assert by_key[("diabetes", "iid", "backdoor", "verification")]["goal"] is False
    assert by_key[("diabetes", "iid", "backdoor", "krum")]["goal"] is None


def test_cells_written_before_the_reference_backdoor_was_measured_are_read_without_it() -> None:
    results = make_results()
    for c in results["cells"]:
        del c["reference_backdoor_success"]

    row = verification_row(results, "diabetes", "iid", "backdoor")

    assert (row["reference_backdoor_mean"], row["reference_backdoor_std"]) == (None, None)
    assert row["goal_missed"] == ["backdoor 50% > 5%"]
    assert "| 50.0 ± 14.1 | – | not met: backdoor 50% > 5% |" in markdown_table([row])


def test_the_backdoor_goal_holds_whatever_the_attacker_free_model_answers() -> None:
    # The reference answers the trigger as often as the attack wants: still a miss, with the reason.
    results = make_results()
    for c in find(results, "diabetes", "iid", "backdoor", "verification"):
        c["reference_backdoor_success"] = 0.5

    row = verification_row(results, "diabetes", "iid", "backdoor")

    assert row["goal"] is False and row["goal_missed"] == ["backdoor 50% > 5% (attacker-free: 50%)"]


def test_a_perfect_filter_ends_as_the_reference_and_misses_what_the_reference_misses() -> None:
    results = make_results()

    # The attacker-free model answers the trigger on 5 % and 15 % of the cases: a perfect filter ends there.
    assert verification_row(results, "breast_cancer", "iid", "backdoor")["perfect_filter_missed"] == [
        "backdoor 10% > 5%"]
    # krum ends at the reference, which a perfect filter ties and the verification (0.2 points under) does not.
    skewed = verification_row(results, "diabetes", "dirichlet", "scaling")
    assert skewed["goal_missed"] == ["below krum"] and skewed["perfect_filter_missed"] == []
    for row in summary_rows(results):
        assert (row["perfect_filter_missed"] is None) == (row["defence"] != "verification")


def test_a_baseline_above_the_reference_is_out_of_reach_of_a_perfect_filter() -> None:
    results = make_results()
    for c in find(results, "breast_cancer", "iid", "scaling", "krum"):
        c["final_accuracy"] = c["reference_accuracy"] + 0.01

    row = verification_row(results, "breast_cancer", "iid", "scaling")

    assert row["goal_missed"] == ["below krum"] and row["perfect_filter_missed"] == ["below krum"]


def test_the_reach_table_counts_the_goal_against_a_perfect_filter() -> None:
    table = reach_table(summary_rows(make_results())).splitlines()

    assert table[0] == ("| Dataset | Partition | Settings | Goal met | Met by a perfect filter | "
                        "Goal met where a perfect filter meets it |")
    assert "| breast_cancer | IID | 2 | 2 | 1 | 1 |" in table
    # diabetes IID: the backdoor gets through (goal missed) where a perfect filter misses it too.
    assert "| diabetes | IID | 2 | 1 | 1 | 1 |" in table
    # diabetes Dirichlet: the verification misses scaling, which a perfect filter would meet.
    assert "| diabetes | Dirichlet α=0.5 | 2 | 1 | 1 | 0 |" in table
    assert table[-1] == "| **all** |  | **8** | **6** | **4** | **3** |"


def test_an_honest_model_rejected_under_iid_misses_the_goal() -> None:
    results = make_results()
    for c in find(results, "breast_cancer", "iid", "scaling", "verification"):
        c["honest_rejected"] = 1

    row = verification_row(results, "breast_cancer", "iid", "scaling")

    assert row["goal"] is False and row["goal_missed"] == ["2 honest rejected under IID"]
    assert row["perfect_filter_missed"] == []  # a perfect filter rejects no honest model


def test_a_baseline_run_on_fewer_seeds_is_compared_on_those_seeds_alone() -> None:
    results = make_results()
    # krum ran seed 0 alone, 0.3 points above the verification's seed 0; the verification's mean
    # over both seeds (95.5) is higher than krum's seed 0 (95.3), which must not hide the loss on seed 0.
    results["cells"] = [c for c in results["cells"] if not (c["defence"] == "krum" and c["seed"] == 1)]
    verified = {c["seed"]: c for c in find(results, "breast_cancer", "iid", "scaling", "verification")}
    for c in find(results, "breast_cancer", "iid", "scaling", "krum"):
        c["final_accuracy"] = verified[0]["final_accuracy"] + 0.003
    row = verification_row(results, "breast_cancer", "iid", "scaling")
    assert row["final_mean"] > verified[0]["final_accuracy"] + 0.003
    assert row["goal_missed"] == ["below krum"]


def test_the_markdown_table_has_a_line_per_row() -> None:
    rows = summary_rows(make_results())

    table = markdown_table(rows).splitlines()

    assert table[0] == "| " + " | ".join(HEADERS) + " |"
    assert len(table) == 2 + len(rows)
    assert "| breast_cancer | IID | scaling | 40% | verification | 2 | 95.5 ± 0.7 |" in table[2]


def test_the_comparison_table_puts_every_defence_of_a_setting_on_one_line() -> None:
    results = make_results()
    # krum ran seed 0 alone in one setting, and ties the verification's best mean in another.
    results["cells"] = [c for c in results["cells"] if not (
        (c["dataset"], c["partition"], c["attack"], c["defence"], c["seed"])
        == ("diabetes", "iid", "backdoor", "krum", 1))]
    for c in find(results, "breast_cancer", "dirichlet", "scaling", "krum"):
        c["final_accuracy"] = 0.90 + 0.01 * c["seed"] - 0.002

    table = comparison_table(summary_rows(results)).splitlines()

    assert table[0] == "| Dataset | Partition | Attack | Malicious | Reference (%) | verification | fedavg | krum |"
    assert len(table) == 2 + 2 * 2 * 2
    assert ("| breast_cancer | IID | scaling | 40% | 96.0 ± 0.7 | **95.5 ± 0.7** | 55.0 ± 0.0 | 87.5 ± 0.7 |"
            in table)
    # The best mean is bold; the reference is over the setting's seeds, not the short defence's.
    assert ("| diabetes | IID | backdoor | 40% | 91.5 ± 0.7 | **91.3 ± 0.7** | 55.0 ± 0.0 | 88.0 (n=1) |"
            in table)
    assert ("| breast_cancer | Dirichlet α=0.5 | scaling | 40% | 90.5 ± 0.7 | **90.3 ± 0.7** | 55.0 ± 0.0 "
            "| **90.3 ± 0.7** |" in table)


def test_partial_results_give_a_partial_report(tmp_path: Path) -> None:
    results = make_results()
    results["cells"] = [
        c for c in results["cells"]
        if c["dataset"] == "breast_cancer" and (c["defence"] != "verification" or c["seed"] == 0)
        and not (c["attack"] == "backdoor" and c["partition"] == "dirichlet")
    ]

    files = write_report(results, tmp_path)

    page = files.html.read_text(encoding="utf-8")
    assert f"incomplete: {len(results['cells'])} of 48 cells finished" in page
    assert [p.name for p in files.figures] == [
        "accuracy-breast_cancer.png", "status-breast_cancer.png", "status-ratio.png"]
    one_seed = table_row(page, "breast_cancer", "IID", "scaling", "40%", "verification")
    assert one_seed[HEADERS.index("Final (%)")] == "95.0"  # one seed: no standard deviation
    assert "diabetes" not in page.split("<h2>Summary</h2>")[1]


def test_empty_results_say_so(tmp_path: Path) -> None:
    results = make_results()
    results["cells"] = []

    files = write_report(results, tmp_path)

    assert files.figures == []
    assert files.csv.read_text(encoding="utf-8").count("\n") == 1  # the header only
    page = files.html.read_text(encoding="utf-8")
    assert "No cell of this evaluation has finished yet" in page
    assert "<h2>Summary</h2>" not in page and "<img" not in page


def test_rewriting_leaves_no_temporary_or_stale_file_and_the_same_bytes(tmp_path: Path) -> None:
    results = make_results()
    results["cells"] = [c for c in results["cells"] if (c["dataset"], c["attack"]) == ("diabetes", "scaling")]
    first = write_report(results, tmp_path / "a", generated_at=WHEN)
    again = write_report(copy.deepcopy(results), tmp_path / "b", generated_at=WHEN)

    written, rewritten = [first.csv, first.html, *first.figures], [again.csv, again.html, *again.figures]
    for a, b in zip(written, rewritten, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name

    results["cells"] = []
    write_report(results, tmp_path / "a")

    assert sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*")) == [
        "figures", "report.html", "results.csv"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.update(format="something-else/1"), "not MedFedChain evaluation results"),
    (lambda r: r["cells"][3].pop("defence"), "in cell 4 (breast_cancer, scaling, None, seed 1), 'defence'"),
    (lambda r: r["cells"][0]["statuses"][0].update(status="lost"), "'status' is one of accepted, rejected"),
    (lambda r: r["cells"][0].update(final_accuracy="0.9"), "'final_accuracy' should be a number or null"),
    (lambda r: r["cells"].append(dict(r["cells"][1])), "list one run twice: cells 2 and 49"),
])
def test_malformed_results_are_refused_with_the_place(tmp_path: Path, change: Any, message: str) -> None:
    results = make_results()
    change(results)

    with pytest.raises(ConfigError) as error:
        write_report(results, tmp_path)

    assert message in error.value.user_message
    assert not any(tmp_path.iterdir())

"""The README's evaluation tables are what the committed results give, not numbers typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

from core.evaluation.report import markdown_table, summary_rows
from core.evaluation.summary import comparison_table, reach_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "evaluation" / "results.json"


def test_the_readme_table_is_the_committed_results_verification_rows() -> None:
    rows = [row for row in summary_rows(json.loads(RESULTS.read_text(encoding="utf-8")))
            if row["defence"] == "verification"]

    assert rows, "the committed results hold no verification cell"
    assert markdown_table(rows) in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_comparison_of_the_defences_is_the_committed_results() -> None:
    rows = summary_rows(json.loads(RESULTS.read_text(encoding="utf-8")))

    assert {row["defence"] for row in rows} > {"verification"}, "the committed results hold no baseline"
    assert comparison_table(rows) in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_count_of_the_goal_against_a_perfect_filter_is_the_committed_results() -> None:
    rows = summary_rows(json.loads(RESULTS.read_text(encoding="utf-8")))

    assert reach_table(rows) in (ROOT / "README.md").read_text(encoding="utf-8")

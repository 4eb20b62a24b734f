"""The README's evaluation table is what the committed results give, not numbers typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

from core.evaluation.report import markdown_table, summary_rows

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "evaluation" / "results.json"


def test_the_readme_table_is_the_committed_results_verification_rows() -> None:
    rows = [row for row in summary_rows(json.loads(RESULTS.read_text(encoding="utf-8")))
            if row["defence"] == "verification"]

    assert rows, "the committed results hold no verification cell"
    assert markdown_table(rows) in (ROOT / "README.md").read_text(encoding="utf-8")

"""The evaluation's report files from its results: results.csv (one row per cell), the PNG figures
and report.html, a single self-contained page (figures inline as data URIs, no scripts, no links)
that opens offline in a browser and in Qt's QTextBrowser. Partial results give a partial report.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from core.errors import CoreError
from core.evaluation.cells import CELL_COLUMNS, FORMAT, VERIFICATION, Evaluation, read_evaluation
from core.evaluation.figures import Chart, accuracy_chart, ratio_chart, status_chart
from core.evaluation.summary import (
    GOAL,
    SUMMARY_HEADERS,
    SummaryRow,
    markdown_table,
    summary_cells,
    summary_rows,
)
from core.files import write_atomic

__all__ = ["GOAL", "ReportFiles", "markdown_table", "summary_rows", "write_report"]

logger = logging.getLogger(__name__)

CSV_NAME = "results.csv"
HTML_NAME = "report.html"
FIGURES_DIR = "figures"
_FIGURE_PREFIXES = ("accuracy-", "status-")  # what a former report of ours left in figures/


@dataclass(frozen=True)
class ReportFiles:
    """The files `write_report` wrote."""

    csv: Path
    figures: list[Path]
    html: Path


def write_report(
    results: Mapping[str, Any], out_dir: Path, *, generated_at: datetime | None = None
) -> ReportFiles:
    """Writes out_dir/results.csv, out_dir/figures/*.png and out_dir/report.html from `results`
    (results.json as loaded), each file atomically. Figures of an earlier report that this one
    no longer draws are removed, so figures/ always matches report.html.

    Raises ConfigError when `results` is malformed, CoreError when a file cannot be written."""
    evaluation = read_evaluation(results)
    rows = summary_rows(evaluation)
    charts = _charts(evaluation, rows)
    out_dir = Path(out_dir)
    figures_dir = out_dir / FIGURES_DIR
    try:
        figures = []
        for chart in charts:
            path = figures_dir / f"{chart.name}.png"
            write_atomic(path, chart.png)
            figures.append(path)
        _remove_stale_figures(figures_dir, keep=figures)
        csv_path = out_dir / CSV_NAME
        write_atomic(csv_path, cells_csv(results.get("cells") or []))
        html_path = out_dir / HTML_NAME
        write_atomic(html_path, report_html(evaluation, rows, charts, generated_at or datetime.now(UTC)))
    except OSError as exc:
        raise CoreError(f"The evaluation report could not be written in {out_dir}.", detail=str(exc)) from exc
    logger.info("Wrote the evaluation report of %d cells to %s", len(evaluation.cells), html_path)
    return ReportFiles(csv=csv_path, figures=figures, html=html_path)


def _charts(evaluation: Evaluation, rows: Sequence[SummaryRow]) -> list[Chart]:
    """The figures in the order the report shows them, each with a distinct file name."""
    datasets = evaluation.ordered("datasets", (c.dataset for c in evaluation.cells))
    drawn = [accuracy_chart(evaluation, d) for d in datasets]
    drawn += [status_chart(evaluation, d) for d in datasets]
    drawn.append(ratio_chart(evaluation, rows))
    charts: list[Chart] = []
    names: set[str] = set()
    for chart in drawn:
        if chart is None:
            continue
        name, n = chart.name, 1
        while name in names:  # two dataset names with the same file-name form
            n += 1
            name = f"{chart.name}-{n}"
        names.add(name)
        charts.append(chart if name == chart.name else replace(chart, name=name))
    return charts


def _remove_stale_figures(figures_dir: Path, keep: Iterable[Path]) -> None:
    kept = set(keep)
    if not figures_dir.is_dir():
        return
    for path in figures_dir.glob("*.png"):
        if path not in kept and path.name.startswith(_FIGURE_PREFIXES):
            path.unlink()


def cells_csv(cells: Sequence[Mapping[str, Any]]) -> str:
    """One CSV row per cell: the CELL_COLUMNS, then any other scalar field the cells carry
    (sorted by name); lists and records (accuracy per round, statuses) are left out."""
    keys = dict.fromkeys(key for cell in cells for key in cell if key not in CELL_COLUMNS)
    extra = sorted(key for key in keys if not any(isinstance(cell.get(key), list | dict) for cell in cells))
    columns = [*CELL_COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for cell in cells:
        writer.writerow([_csv_value(cell.get(column)) for column in columns])
    return buffer.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_CSS = """
body { font-family: "Segoe UI", Helvetica, Arial, sans-serif; color: #222222; margin: 24px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #BBBBBB; padding: 3px 6px; font-size: 13px; }
th { background-color: #EEEEEE; text-align: left; white-space: nowrap; }
td { white-space: nowrap; }
td.num { text-align: right; }
td.met, td.missed { white-space: normal; }
td.met { background-color: #CCE3F0; }
td.missed { background-color: #F6D8C2; }
tr.verification td { background-color: #F2F2F2; }
td.defence { font-weight: bold; }
p.note { background-color: #FFF4CC; padding: 6px; }
p.caption { color: #444444; font-size: 13px; max-width: 60em; }
img { max-width: 100%; height: auto; }
"""


def report_html(evaluation: Evaluation, rows: Sequence[SummaryRow], charts: Sequence[Chart],
                generated_at: datetime) -> str:
    """The report page: title, the matrix, the summary table with the goal, the figures."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>MedFedChain evaluation report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>MedFedChain evaluation report</h1>",
        (f"<p>Generated {escape(generated_at.strftime('%Y-%m-%d %H:%M %Z').strip())} from "
         f"{_cell_count(evaluation)} (results format {escape(FORMAT)}).</p>"),
    ]
    expected = evaluation.expected_cells
    if not evaluation.cells:
        parts.append('<p class="note">No cell of this evaluation has finished yet, so there is nothing to '
                     "summarise or plot. Run the evaluation (again) and write the report once cells "
                     "are in the results.</p>")
    elif expected is not None and len(evaluation.cells) < expected:
        parts.append(f'<p class="note">This evaluation is incomplete: {len(evaluation.cells)} of {expected} '
                     "cells finished (the run stopped early). The tables and figures show the finished "
                     "cells only; means are over the seeds that finished.</p>")
    if evaluation.failed:
        parts.append(f'<p class="note">{len(evaluation.failed)} cell(s) failed and are left out (running the '
                     "evaluation again retries them): " + "; ".join(escape(f) for f in evaluation.failed) + "</p>")
    parts += ["<h2>Matrix</h2>", _matrix_table(evaluation.matrix)]
    if rows:
        parts += ["<h2>Summary</h2>", _summary_intro(), _summary_table(rows)]
    if charts:
        parts.append("<h2>Figures</h2>")
        for number, chart in enumerate(charts, start=1):
            data = base64.b64encode(chart.png).decode("ascii")
            parts += [
                f"<h3>Figure {number}. {escape(chart.title)}</h3>",
                f'<p><img src="data:image/png;base64,{data}" alt="{escape(chart.title)}"></p>',
                f'<p class="caption">{escape(chart.caption)}</p>',
            ]
    if evaluation.cells and not any(c.defence == VERIFICATION for c in evaluation.cells):
        parts.append('<p class="note">No cell of the verification defence has finished, so the verdict '
                     "figures and the goal column are missing.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _cell_count(evaluation: Evaluation) -> str:
    count = len(evaluation.cells)
    expected = evaluation.expected_cells
    text = f"{count} cell{'s' if count != 1 else ''}"
    return text if expected is None else f"{text} of {expected} in the matrix"


def _matrix_table(matrix: Mapping[str, Any]) -> str:
    if not matrix:
        return "<p>The results do not describe their matrix.</p>"
    lines = ['<table border="1" cellspacing="0" cellpadding="3">']
    for key, value in matrix.items():
        shown = ", ".join(_plain(v) for v in value) if isinstance(value, list) else _plain(value)
        lines.append(f"<tr><th>{escape(str(key).replace('_', ' '))}</th><td>{escape(shown)}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _plain(value: Any) -> str:
    return "–" if value is None else str(value)


def _summary_intro() -> str:
    baselines = ", ".join(GOAL.baselines)
    iid = ", ".join(p.upper() for p in GOAL.no_honest_rejected_under)
    tolerance = GOAL.accuracy_tolerance * 100
    return (
        "<p>One row per dataset, partition, attack, malicious fraction and defence. Accuracies are in "
        "percent, mean ± standard deviation over the seeds; the gap is final minus reference accuracy in "
        "percentage points. Reference: the federation with the attackers left out; clean: no attacker. "
        "Poisoned accepted and honest rejected count models over all rounds and seeds. Backdoor: the "
        "share of triggered test samples (of other classes) the final model assigns the attack's target; "
        "without attackers: the same share for the reference federation's model, what a verification "
        "that rejects exactly the attackers ends with (on tables the trigger can be real evidence for "
        "the target class).</p>"
        "<p>The goal (verification rows) is met when all of these hold:</p><ul>"
        f"<li>final accuracy ≥ reference accuracy − {tolerance:g} percentage "
        f"point{'' if tolerance == 1 else 's'};</li>"
        f"<li>backdoor success ≤ {GOAL.max_backdoor:.0%} where the attack plants a trigger;</li>"
        f"<li>no honest model rejected under {escape(iid)} partitions;</li>"
        f"<li>final accuracy ≥ the mean final accuracy of every baseline that ran in the same setting "
        f"({escape(baselines)}).</li></ul>"
        "<p>Goal of a perfect filter: the same criteria for a verification that rejects exactly the "
        "attackers' models, so that the federation ends as the reference does. Where it misses one, no "
        "verification followed by FedAvg can meet it: a baseline ends above the federation without the "
        "attackers, or the attacker-free model already answers the trigger.</p>"
    )


def _summary_table(rows: Sequence[SummaryRow]) -> str:
    numeric = set(SUMMARY_HEADERS[5:-2])
    lines = ['<table border="1" cellspacing="0" cellpadding="3">',
             "<tr>" + "".join(f"<th nowrap>{escape(h)}</th>" for h in SUMMARY_HEADERS) + "</tr>"]
    for row in rows:
        cells = []
        for header, text in zip(SUMMARY_HEADERS, summary_cells(row), strict=True):
            if header == "Goal" and row["goal"] is not None:
                css, colour = ("met", "#CCE3F0") if row["goal"] else ("missed", "#F6D8C2")
                cells.append(f'<td class="{css}" bgcolor="{colour}">{escape(text)}</td>')
            elif header == "Defence" and row["defence"] == VERIFICATION:
                cells.append(f'<td class="defence" nowrap>{escape(text)}</td>')
            else:
                css = ' class="num"' if header in numeric else ""
                cells.append(f"<td{css} nowrap>{escape(text)}</td>")
        css = ' class="verification"' if row["defence"] == VERIFICATION else ""
        lines.append(f"<tr{css}>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)

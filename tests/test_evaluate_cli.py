"""`medfedchain evaluate` as a user runs it: the matrix, the files it writes, resuming, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from main import main


def test_evaluate_writes_results_csv_figures_and_report_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--home", str(tmp_path / "home"), "--datasets", "breast_cancer", "--attacks", "scaling",
            "--defences", "verification", "median", "--rounds", "1", "--epochs", "2", "--out", str(out)]

    assert main(args) == 0
    printed = capsys.readouterr()
    assert "2 cells" in printed.out and "report in" in printed.out
    assert "2/2 cells" in printed.err  # the progress bar's last state
    results = json.loads((out / "results.json").read_text())
    assert [(c["attack"], c["defence"]) for c in results["cells"]] == [("scaling", "verification"),
                                                                       ("scaling", "median")]
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["defence"] for r in rows] == ["verification", "median"]
    assert float(rows[0]["final_accuracy"]) == pytest.approx(results["cells"][0]["final_accuracy"])
    figures = sorted((out / "figures").glob("*.png"))
    assert figures and all(f.read_bytes().startswith(b"\x89PNG") for f in figures)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html.lower()

    # Run again: everything is there, nothing runs.
    assert main(args) == 0
    assert "2 from an earlier run, 0 federations run now" in capsys.readouterr().out


@pytest.mark.parametrize(("extra", "message"), [
    (["--defences", "magic"], "Unknown defence 'magic'"),
    (["--seeds", "0"], "--seeds is the number of seeds"),
    (["--malicious-fraction", "0.9", "--hospitals", "2"], "must make between 1 and 1"),
    (["--datasets", "/no/such/file.csv"], "/no/such/file.csv"),
])
def test_evaluate_refuses_bad_input_with_exit_2_or_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code = main(["evaluate", "--home", str(tmp_path / "home"), "--attacks", "scaling", "--out", str(tmp_path / "o"),
                 *extra])
    assert code in (2, 3)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.json").exists()

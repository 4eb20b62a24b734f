"""Smoke test of bench/deployment.py: three hospital processes (the last one a label-flipping
attacker), one round, and the in-process simulation of the same federation; the JSON it writes
holds every field, and the chain records the attacker's model as rejected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

ROOT = Path(__file__).resolve().parents[2]


def test_the_deployment_benchmark_reports_every_field_and_rejects_the_attacker(tmp_path: Path) -> None:
    out = tmp_path / "deployment.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "deployment.py"), "--hospitals", "3", "--malicious", "1",
         "--rounds", "1", "--work", str(tmp_path / "work"), "--json", str(out)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(done.stdout) == report

    hospitals = ["hospital-1", "hospital-2", "hospital-3"]
    assert report["rounds_finalised"] == 1
    status = {m["hospital"]: m["status"] for m in report["models"] if m["round"] == 1}
    assert status == {"hospital-1": "accepted", "hospital-2": "accepted", "hospital-3": "rejected"}
    assert [m["hospital"] for m in report["models"] if m["malicious"]] == ["hospital-3"]
    assert report["verdicts_agree"] is True

    assert set(report["audits"]) == set(hospitals)
    for hid, audit in report["audits"].items():
        if audit["ok"] is None:  # `ledger audit --consortium` not in this checkout yet
            assert audit["reason"]
        else:  # the attacker's own home fails: its ballot does not follow the policy
            assert audit["ok"] is (hid != "hospital-3"), audit

    seconds = report["seconds_per_round"]
    assert seconds["deployment"] > 0 and seconds["in_process"] > 0
    assert report["ratio"] == pytest.approx(seconds["deployment"] / seconds["in_process"], abs=0.01)
    assert set(report["peak_rss_mb"]) == {"coordinator", *hospitals}
    assert all(mb > 50 for mb in report["peak_rss_mb"].values())  # a Python process with TensorFlow
    assert [g["round"] for g in report["gas_per_hospital"]] == [1]
    assert report["gas_per_hospital"][0]["gas"] > 0

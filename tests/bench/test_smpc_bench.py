"""Smoke test of bench/smpc.py's cross-process case: a secure round of three hospital processes
with the SMPC players as processes behind their mTLS gateways, against the same round driven in
process; the JSON holds every field, every time and byte count positive, every party's traffic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

ROOT = Path(__file__).resolve().parents[2]
HOSPITALS = ["hospital-1", "hospital-2", "hospital-3"]
PLAYERS = ["server0", "server1", "server2"]


def test_the_smpc_processes_benchmark_reports_every_field(tmp_path: Path) -> None:
    out = tmp_path / "smpc.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "smpc.py"), "--player-mode", "processes", "--hospitals", "3",
         "--rounds", "1", "--epochs", "1", "--work", str(tmp_path / "work"), "--json", str(out)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(done.stdout) == report
    [case] = report["cases"]

    assert case["player_mode"] == "processes" and case["architecture"] == "tabular_cnn"
    assert case["transport"] == "mTLS gRPC gateways (grpc.aio, BoringSSL), TF raw ports on loopback"
    assert case["hospitals"] == 3 and case["rounds"] == 1
    assert case["accepted"] == {"1": HOSPITALS}
    assert set(case["validation_rows_per_hospital"]) == set(HOSPITALS)
    assert all(rows > 0 for rows in case["validation_rows_per_hospital"].values())

    [first] = case["per_round"]
    assert first["round"] == 1 and first["candidates"] == 3 and first["validators"] == 3
    for key in ("scoring_s", "aggregation_s", "smpc_s", "in_process_scoring_s", "in_process_aggregation_s",
                "in_process_smpc_s", "ratio"):
        assert first[key] > 0, key
    assert first["smpc_s"] == pytest.approx(first["scoring_s"] + first["aggregation_s"], abs=0.002)
    assert case["smpc_s"] > 0 and case["in_process_smpc_s"] > 0
    assert case["ratio"] == pytest.approx(case["smpc_s"] / case["in_process_smpc_s"], abs=0.01)
    assert case["ratio_last_round"] == first["ratio"]

    traffic = case["bytes"]
    assert set(traffic) == {*PLAYERS, "driver", "driver_share_player", *HOSPITALS}
    for name in PLAYERS:  # each player's gateway carried traffic with the driver and another player
        assert "driver" in traffic[name] and len(traffic[name]) >= 2, traffic[name]
    for name in ["driver_share_player", *HOSPITALS]:  # the SharePlayer links to both share holders
        assert set(traffic[name]) == {"server0", "server1"}, traffic[name]
    for name, links in traffic.items():
        for peer, counts in links.items():
            assert counts["sent"] > 0 and counts["received"] > 0, (name, peer, counts)
    assert set(case["bytes_total"]) == set(traffic)
    assert all(t["sent"] > 0 and t["received"] > 0 for t in case["bytes_total"].values())

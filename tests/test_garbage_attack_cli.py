"""Issue 9.2: one hospital that sends garbage does not stop everyone.

A user's own attack file (`simulate --attack FILE.py:CLASS`) whose `poison_update` returns NaN,
Inf, wrong shapes, a non-array or nothing, or raises: the run exits 0, the attacker is that
round's recorded failure, the honest hospitals are accepted, and the home passes the audit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ATTACKS = '''
import numpy as np
from core.attacks.base import Attack


class NaN(Attack):
    name = "nan"
    def poison_update(self, ctx):
        return [np.full_like(d, np.nan) for d in ctx.honest_delta]


class Inf(Attack):
    name = "inf"
    def poison_update(self, ctx):
        return [np.full_like(d, -np.inf) if i else d for i, d in enumerate(ctx.honest_delta)]


class WrongShapes(Attack):
    name = "wrong_shapes"
    def poison_update(self, ctx):
        return [np.zeros((3, 7), np.float32) for _ in ctx.honest_delta]


class TooFewTensors(Attack):
    name = "too_few_tensors"
    def poison_update(self, ctx):
        return list(ctx.honest_delta)[:-1]


class NotAnArray(Attack):
    name = "not_an_array"
    def poison_update(self, ctx):
        return "surprise"


class ReturnsNone(Attack):
    name = "returns_none"
    def poison_update(self, ctx):
        return None


class Raises(Attack):
    name = "raises"
    def poison_update(self, ctx):
        raise RuntimeError("the attack plugin crashed")
'''


def _main(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MEDFED_KEYSTORE_PASSWORD")}
    env["MEDFED_HOME"] = str(home)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["NaN", "Inf", "WrongShapes", "TooFewTensors", "NotAnArray", "ReturnsNone",
                                    "Raises"])
def test_a_garbage_update_is_the_attackers_failure_and_the_run_goes_on(tmp_path: Path, attack: str) -> None:
    plugin = tmp_path / "garbage.py"
    plugin.write_text(ATTACKS)
    out = tmp_path / "report.json"

    result = _main(tmp_path, "simulate", "--home", str(tmp_path), "--hospitals", "3", "--malicious", "1",
                   "--attack", f"{plugin}:{attack}", "--rounds", "2", "--epochs", "1", "--json", str(out))
    audit = _main(tmp_path, "ledger", "audit", "--home", str(tmp_path))

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    for row in report["rounds"]:
        assert {m["hospital"]: m["status"] for m in row["models"] if m["status"] == "accepted"} == {
            "hospital-1": "accepted", "hospital-2": "accepted"}
        assert sorted(row["contributors"]) == ["hospital-1", "hospital-2"]
        (failure,) = row["failures"]
        assert failure["hospital_id"] == "hospital-3" and failure["stage"] == "training"
        assert "attack plugin" in failure["message"]
    assert "hospital-3 failed at training" in result.stdout
    assert audit.returncode == 0, audit.stdout[-3000:]

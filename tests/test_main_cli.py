"""The headless CLI as an IT person runs it: real processes, exit codes and the JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, home: Path, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MEDFED_HOME"] = str(home)
    env.update(extra_env)
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_simulate_writes_the_documented_json_and_state(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = run("simulate", "--hospitals", "4", "--malicious", "1", "--attack", "noise", "--rounds", "2",
                 "--dataset", "breast_cancer", "--partition", "dirichlet", "--alpha", "5",
                 "--aggregator", "fedavg", "--verifier", "plaintext", "--seed", "3", "--home", str(tmp_path),
                 "--no-ledger", "--json", str(out), home=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Round 2: global accuracy" in result.stdout
    report = json.loads(out.read_text())
    assert isinstance(report["final_accuracy"], float)
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    for row in report["rounds"]:
        assert isinstance(row["accuracy"], float)
        for model in row["models"]:
            assert set(model) >= {"hospital", "malicious", "status", "votes", "scores"}
            assert model["status"] in ("accepted", "rejected")
            assert isinstance(model["malicious"], bool)
            assert set(model["votes"]) == {f"hospital-{i}" for i in range(1, 5)}
    assert (tmp_path / "medfedchain.db").is_file()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["simulate", "--dataset", "no_such_thing.csv", "--no-ledger"], 3, "neither an existing file"),
        (["simulate", "--malicious", "2", "--no-ledger"], 2, "need an --attack"),
        (["simulate", "--hospitals", "3", "--malicious", "4", "--attack", "noise", "--no-ledger"], 2, "--malicious"),
        (["simulate", "--attack", "nosuch.py:Evil", "--malicious", "1", "--no-ledger"], 2, "nosuch.py"),
        (["simulate", "--secure", "--aggregator", "krum", "--no-ledger"], 2, "--secure"),
        (["simulate", "--rpc", "ftp://x"], 2, "--rpc 'ftp://x'"),
        (["simulate", "--rpc", "notaurl"], 2, "--rpc 'notaurl'"),
        (["ledger", "show", "--rpc", "notaurl"], 2, "--rpc 'notaurl'"),
        (["simulate", "--partition", "iid", "--alpha", "0.3", "--no-ledger"], 2, "--alpha"),
    ],
)
def test_bad_arguments_give_one_line_and_a_documented_code(args: list[str], code: int, message: str,
                                                           tmp_path: Path) -> None:
    result = run(*args, home=tmp_path, timeout=120)
    assert result.returncode == code, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("medfedchain: error:") and message in last


def test_corrupt_csv_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"id,diagnosis,radius\n1,M,12.5\n2,B\n3,M,abc\n")
    result = run("simulate", "--dataset", str(bad), "--label-column", "diagnosis", "--no-ledger",
                 home=tmp_path, timeout=120)
    assert result.returncode == 3
    assert "bad.csv" in result.stderr


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    result = run("simulate", "--hospitalz", "3", home=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr


@pytest.mark.slow
def test_a_run_killed_mid_round_leaves_a_consistent_database_and_is_marked_interrupted(tmp_path: Path) -> None:
    import signal
    import sqlite3
    import time

    from core.state.db import open_database
    from core.state.queries import list_federations, list_rounds

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MEDFED_HOME"] = str(tmp_path)
    process = subprocess.Popen([sys.executable, "main.py", "simulate", "--rounds", "50", "--no-ledger"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db_file = tmp_path / "medfedchain.db"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if db_file.exists():
                with sqlite3.connect(db_file) as conn:
                    try:
                        finalized = conn.execute("select count(*) from rounds where status='finalized'").fetchone()[0]
                    except sqlite3.OperationalError:
                        continue
                if finalized >= 1:
                    break
        else:
            pytest.fail("no round was finalised in time")
        time.sleep(1.0)  # land somewhere inside the next round
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)

    with sqlite3.connect(db_file) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    # The next start notices the dead run; the federation and its open round say so.
    result = run("simulate", "--rounds", "1", "--hospitals", "3", "--no-ledger", home=tmp_path)
    assert result.returncode == 0, result.stderr
    db = open_database(db_file)
    killed, latest = sorted(list_federations(db), key=lambda f: f.id)
    assert killed.status == "failed" and "interrupted" in (killed.message or "")
    rounds = list_rounds(db, killed.id)
    assert rounds and all(r.status in ("finalized", "aborted") for r in rounds)
    assert rounds[0].status == "finalized"
    assert latest.status == "completed"
    db.close()


@pytest.mark.slow
def test_a_users_own_attack_file_runs_through_the_attack_interface(tmp_path: Path) -> None:
    attack = tmp_path / "my_attack.py"
    attack.write_text(
        "import numpy as np\n"
        "from core.attacks.base import Attack\n\n"
        "class Inflate(Attack):\n"
        "    name = 'inflate'\n"
        "    def __init__(self, factor: float = 20.0) -> None:\n"
        "        self.factor = factor\n"
        "    def poison_update(self, ctx):\n"
        "        return [d * self.factor for d in ctx.honest_delta]\n"
    )
    out = tmp_path / "r.json"
    result = run("simulate", "--hospitals", "3", "--malicious", "1", "--attack", f"{attack}:Inflate",
                 "--attack-param", "factor=30", "--rounds", "1", "--no-ledger", "--json", str(out), home=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    attacker = next(m for m in report["rounds"][0]["models"] if m["malicious"])
    assert attacker["hospital"] == "hospital-3" and attacker["status"] == "rejected"
    norms = [s["norm"] / s["reference_norm"] for v, s in attacker["scores"].items() if v != "hospital-3"]
    assert min(norms) > 10  # the user's factor of 30 reached the submitted update


@pytest.mark.slow
def test_simulate_records_on_the_embedded_chain_by_default_and_audit_agrees(tmp_path: Path) -> None:
    result = run("simulate", "--hospitals", "3", "--malicious", "1", "--attack", "scaling", "--rounds", "2",
                 "--epochs", "2", home=tmp_path)
    assert result.returncode == 0, result.stderr
    audit = run("ledger", "audit", home=tmp_path, timeout=120)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "2 rounds compared with the local database" in audit.stdout
    show = run("ledger", "show", home=tmp_path, timeout=120)
    assert "model hospital-3" in show.stdout and "rejected" in show.stdout

    # One changed byte in any stored model (the initial one, each round's global model and each
    # committed candidate of the shared store) and the audit names it.
    blobs = sorted((tmp_path / "blobs").iterdir())
    assert len(blobs) == 1 + 2 + 2 * 3
    for blob in blobs:
        original = blob.read_bytes()
        blob.write_bytes(original[:-1] + bytes([original[-1] ^ 0x01]))
        tampered = run("ledger", "audit", home=tmp_path, timeout=120)
        assert tampered.returncode == 10, blob.name
        assert blob.name in tampered.stdout
        blob.write_bytes(original)
    assert run("ledger", "audit", home=tmp_path, timeout=120).returncode == 0


@pytest.mark.slow
@pytest.mark.anvil
def test_simulate_with_rpc_records_every_round_on_a_real_node(tmp_path: Path) -> None:
    from ledger.anvil import AnvilNode

    node = AnvilNode().start()
    try:
        result = run("simulate", "--hospitals", "3", "--malicious", "1", "--attack", "noise", "--rounds", "2",
                     "--epochs", "2", "--rpc", node.url, home=tmp_path,
                     MEDFED_KEYSTORE_PASSWORD="a hospital's own secret")
        assert result.returncode == 0, result.stderr
        audit = run("ledger", "audit", "--rpc", node.url, home=tmp_path, timeout=120,
                    MEDFED_KEYSTORE_PASSWORD="a hospital's own secret")
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert "2 rounds" in audit.stdout
        assert not (tmp_path / "ledger" / "chain").exists()  # nothing went to the embedded chain
    finally:
        node.stop()


@pytest.mark.slow
def test_the_main_command_without_a_display_runs_the_demo_federation(tmp_path: Path) -> None:
    home = tmp_path / "given-home"
    result = run("--home", str(home), home=tmp_path / "env-home", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "headless demo federation" in result.stdout
    assert "attackers rejected 3/3" in result.stdout
    assert (home / "medfedchain.db").is_file() and not (tmp_path / "env-home" / "medfedchain.db").exists()


def test_a_lost_ledger_node_is_one_line_on_stderr_and_the_details_are_in_the_log(tmp_path: Path) -> None:
    from ledger.anvil import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = run("simulate", "--hospitals", "2", "--rounds", "1", "--epochs", "1", "--rpc", url,
                 home=tmp_path, timeout=180)

    assert result.returncode == 8, result.stderr
    ours = [line for line in result.stderr.splitlines()
            if line.startswith(("medfedchain:", "WARNING ", "ERROR ")) or url in line]
    assert ours == ["medfedchain: error: The ledger node cannot be reached. Check that it is running and "
                    "reachable, then resume the round."]
    assert "Traceback" not in result.stderr
    log = (tmp_path / "medfedchain.log").read_text(encoding="utf-8")
    assert "retrying" in log and url in log and "NodeUnavailable" in log


def test_a_majority_of_attackers_is_warned_of_on_stderr(tmp_path: Path) -> None:
    result = run("simulate", "--hospitals", "2", "--malicious", "1", "--attack", "noise", "--rounds", "1",
                 "--epochs", "1", "--no-ledger", home=tmp_path, timeout=180)

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("medfedchain: warning:")]
    assert len(warnings) == 1 and "1 of the 2 hospitals are malicious" in warnings[0]
    assert "fewer than half" in warnings[0]


@pytest.mark.gui
def test_gui_quit_after_shown_opens_the_window_and_quits_with_its_start_up_time(tmp_path: Path) -> None:
    # The hook of the bundle smoke test and bench/bundle.py.
    result = run("gui", "--quit-after-shown", home=tmp_path, QT_QPA_PLATFORM="offscreen")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("window shown after ") and result.stdout.rstrip().endswith(" s")
    assert (tmp_path / "medfedchain.db").is_file()

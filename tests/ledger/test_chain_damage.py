"""A damaged or missing embedded chain file: refused with a message naming the damage, never a
traceback, never written over; a deleted chain is reported as gone while SQLite holds its rounds.

Each test copies one home with a finalised round (built once) and damages its chain file as an
adversary or a failing disk would: truncation, a garbled header, one flipped byte in a contract
storage trie node (a committed model hash) or in a block index, deletion.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import main
from core.settings import load_settings
from core.state.db import open_database
from core.state.queries import list_federations, list_rounds
from ledger.embedded import CHAIN_FILE, EMPTY_SHA3, trie_nodes, verify_chain_file
from ledger.errors import ChainFileMissing, ChainStoreDamaged
from ledger.session import LedgerSettings, open_ledger
from tests.ledger.conftest import FAST_SCRYPT

ROOT = Path(__file__).resolve().parents[2]
EXIT_LEDGER, EXIT_AUDIT = 8, 10
RUN = ["simulate", "--hospitals", "3", "--rounds", "1", "--epochs", "1"]


@pytest.fixture(scope="module")
def recorded_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose embedded chain holds one finalised round of three hospitals."""
    from core.services.simulation import SimulationConfig, run_simulation

    home = tmp_path_factory.mktemp("recorded")
    run_simulation(SimulationConfig(hospitals=3, rounds=1, local_epochs=1), load_settings(home=home))
    return home


@pytest.fixture
def home(recorded_home: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(recorded_home, copy)
    return copy


def _chain(home: Path) -> Path:
    return home / "ledger" / "chain" / CHAIN_FILE


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main.main(args)
    out = capsys.readouterr()
    return code, out.out + out.err


def _records(path: Path) -> dict[bytes, bytes]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return {bytes(k): bytes(v) for k, v in conn.execute("SELECT k, v FROM kv")}


def _flip_byte_at(path: Path, needle: bytes, offset: int) -> None:
    """Flips one byte of the file: the byte `offset` into the only occurrence of `needle`."""
    data = bytearray(path.read_bytes())
    assert data.count(needle) == 1, "the damaged record must be found exactly once in the file"
    data[data.index(needle) + offset] ^= 0x01
    path.write_bytes(bytes(data))


def _global_hash(home: Path) -> str:
    db = open_database(home / "medfedchain.db")
    try:
        (federation,) = list_federations(db)
        (round_,) = list_rounds(db, federation.id)
        return round_.global_hash
    finally:
        db.close()


def _contract_storage_node_holding(records: dict[bytes, bytes], value: bytes) -> bytes:
    """The raw bytes of the trie node of the contract's storage, at the head, that holds `value`."""
    import rlp
    from eth.db.backends.memory import MemoryDB
    from eth.db.chain import ChainDB
    from eth.rlp.accounts import Account

    head = ChainDB(MemoryDB(dict(records))).get_canonical_head()
    accounts = [rlp.decode(node[1], sedes=Account) for _, node in trie_nodes(records, head.state_root)
                if node is not None and len(node) == 2 and node[0][0] & 0x20]
    (contract,) = [a for a in accounts if a.code_hash != EMPTY_SHA3]
    holding = [records[h] for h, _ in trie_nodes(records, contract.storage_root) if value in records[h]]
    assert len(holding) == 1
    return holding[0]


def test_an_untouched_home_passes_the_check_and_the_audit(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_chain_file(_chain(home)) == []
    code, out = _cli(["ledger", "audit", "--home", str(home)], capsys)
    assert code == 0, out


def test_a_truncated_chain_file_is_refused_by_the_audit_without_a_traceback(home: Path) -> None:
    chain = _chain(home)
    os.truncate(chain, chain.stat().st_size // 2)
    done = subprocess.run([sys.executable, "main.py", "ledger", "audit", "--home", str(home)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == EXIT_LEDGER, done.stderr
    assert "Traceback" not in done.stderr
    assert f"chain file {chain} is damaged" in done.stderr
    assert "malformed" in done.stderr or "integrity check" in done.stderr


def test_a_damaged_header_names_the_file_and_what_is_wrong(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = _chain(home)
    with chain.open("r+b") as f:
        f.write(b"not a database!\0")
    code, out = _cli(["ledger", "audit", "--home", str(home)], capsys)
    assert code == EXIT_LEDGER
    assert f"chain file {chain} is damaged" in out and "not a database" in out


def test_a_flipped_byte_in_a_committed_model_hash_in_contract_storage_fails(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = _chain(home)
    model_hash = bytes.fromhex(_global_hash(home).removeprefix("0x"))
    node = _contract_storage_node_holding(_records(chain), model_hash)
    _flip_byte_at(chain, node, node.index(model_hash) + 5)  # the stored model hash now differs
    code, out = _cli(["ledger", "audit", "--home", str(home)], capsys)
    assert code == EXIT_LEDGER
    assert "is damaged: 1 records do not match their hash" in out
    assert "trie nodes" in out


def test_a_flipped_byte_in_a_block_index_fails(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = _chain(home)
    key = b"block-number-to-hash:5"
    _flip_byte_at(chain, key + b"\xa0", len(key) + 10)  # inside the hash the index names
    with pytest.raises(ChainStoreDamaged) as caught:
        open_ledger(LedgerSettings(home=home, scrypt_n=FAST_SCRYPT), read_only=True)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("the index of block 5 does not name the canonical block")
    code, out = _cli(["ledger", "audit", "--home", str(home)], capsys)
    assert code == EXIT_LEDGER and "the index of block 5 does not name the canonical block" in out


@pytest.mark.parametrize("damage", ["truncate", "trie node"])
def test_a_run_on_a_damaged_store_writes_nothing_into_it(
        home: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    chain = _chain(home)
    if damage == "truncate":
        os.truncate(chain, chain.stat().st_size // 2)
    else:
        model_hash = bytes.fromhex(_global_hash(home).removeprefix("0x"))
        node = _contract_storage_node_holding(_records(chain), model_hash)
        _flip_byte_at(chain, node, node.index(model_hash))
    before = _digest(chain)
    code, out = _cli([*RUN, "--home", str(home)], capsys)
    assert code == EXIT_LEDGER, out
    assert "is damaged" in out and "will not write to it" in out
    assert _digest(chain) == before
    wal = chain.with_name(CHAIN_FILE + "-wal")  # a reader's empty log is fine; no block waits to be checkpointed
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_chain_gone_while_sqlite_holds_rounds_fails_the_audit_and_refuses_a_run(
        home: Path, how: str, capsys: pytest.CaptureFixture[str]) -> None:
    chain = _chain(home)
    if how == "deleted":
        chain.unlink()
    else:
        os.truncate(chain, 0)
    code, out = _cli(["ledger", "audit", "--home", str(home)], capsys)
    assert code == EXIT_AUDIT
    state = "missing" if how == "deleted" else "empty"
    assert f"the ledger's chain file {chain} is {state}, but this data directory's database records 1 " \
           "finalised round" in out
    assert "nothing has been recorded" not in out

    code, out = _cli([*RUN, "--home", str(home)], capsys)
    assert code == EXIT_LEDGER
    assert f"chain file {chain} is {state}" in out and "will not start a new chain" in out
    assert (chain.exists() and chain.stat().st_size == 0) if how == "emptied" else not chain.exists()


def test_the_chain_gone_with_its_deployment_record_is_still_reported(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(home / "ledger")
    code, out = _cli(["ledger", "audit", "--home", str(home)], capsys)
    assert code == EXIT_AUDIT
    assert "is missing, but this data directory's database records 1 finalised round" in out


def test_a_fresh_home_still_gets_a_chain(tmp_path: Path) -> None:
    settings = LedgerSettings(home=tmp_path, keystore_password="pw", scrypt_n=FAST_SCRYPT)
    with pytest.raises(ChainFileMissing, match="nothing has been recorded"):
        open_ledger(settings, read_only=True)
    open_ledger(settings).close()
    assert verify_chain_file(_chain(tmp_path)) == []


def test_a_header_whose_parent_link_loops_ends_the_walk_with_a_problem(recorded_home: Path) -> None:
    import rlp
    from eth.db.backends.memory import MemoryDB
    from eth.db.chain import ChainDB

    from ledger.embedded import verify_chain_records

    records = _records(_chain(recorded_home))
    chaindb = ChainDB(MemoryDB(dict(records)))
    head = chaindb.get_canonical_head()
    parent = chaindb.get_block_header_by_hash(head.parent_hash)
    records[head.parent_hash] = rlp.encode(parent.copy(parent_hash=head.hash))  # the head's parent names the head
    problems = verify_chain_records(records)
    assert problems[0].startswith("1 records do not match their hash")
    assert problems[-1] == f"the chain's parent links loop at block {head.hash.hex()}"

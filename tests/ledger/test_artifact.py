"""The committed contract artifact is exactly what the Vyper source compiles to."""

from __future__ import annotations

import hashlib

from ledger.contract import SOURCE_PATH, compile_source, load_artifact


def test_committed_artifact_matches_the_source() -> None:
    committed = load_artifact()
    rebuilt = compile_source()
    assert (
        committed.source_sha256 == hashlib.sha256(SOURCE_PATH.read_bytes()).hexdigest()
    ), "federation_ledger.vy changed: rebuild with `python -m ledger.contract`"
    assert committed.abi == rebuilt.abi
    assert committed.bytecode == rebuilt.bytecode

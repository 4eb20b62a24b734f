"""Fixtures of the ledger tests: one suite over the embedded chain and a real anvil node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.anvil import AnvilNode, ensure_anvil
from ledger.node import RetryPolicy
from ledger.session import LedgerSettings

# Keystores in tests use a cheap scrypt cost; test_keystore checks the production default.
FAST_SCRYPT = 2**10
FAST_RETRY = RetryPolicy(attempts=3, backoff=0.05, max_sleep=0.2, request_timeout=5.0)


@pytest.fixture(scope="session")
def anvil_binary() -> Path:
    return ensure_anvil()


@pytest.fixture
def anvil(anvil_binary: Path, tmp_path: Path) -> Iterator[AnvilNode]:
    node = AnvilNode(anvil_binary, state_file=tmp_path / "anvil-state.json").start()
    yield node
    node.stop()


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerSettings:
    """Ledger settings of a fresh data directory, on each backend."""
    home = tmp_path / "home"
    if request.param == "embedded":
        return LedgerSettings(
            home=home, keystore_password="test-password", scrypt_n=FAST_SCRYPT, retry=FAST_RETRY
        )
    node: AnvilNode = request.getfixturevalue("anvil")
    return LedgerSettings(
        home=home,
        rpc_url=node.url,
        keystore_password="test-password",
        scrypt_n=FAST_SCRYPT,
        retry=FAST_RETRY,
        receipt_timeout=20.0,
    )

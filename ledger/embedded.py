"""The embedded chain: py-evm behind eth-tester, its state kept in a SQLite file in the data directory.

eth-tester keeps its chain in a dict; py-evm only needs a key-value store under its `AtomicDB`.
`SqliteKeyValueStore` is that store: writes collect in memory and reach the file in one SQLite
transaction after each mined block, so a crash leaves the chain at the last whole block, and a
later process (the app reopened, `ledger audit`) continues from where the previous one stopped.
One process at a time may write (an exclusive lock file); others may open it read-only.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import sqlite3
import threading
from pathlib import Path
from typing import IO, Any, cast

from eth.abc import SignedTransactionAPI, StateAPI
from eth.db.atomic import AtomicDB
from eth.db.backends.base import BaseDB
from eth.estimators.gas import binary_gas_search
from eth.vm.spoof import SpoofTransaction
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.main import (
    ZERO_ADDRESS,
    generate_genesis_state_for_keys,
    get_default_account_keys,
    get_default_genesis_params,
    setup_tester_chain,
)
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import ContractLogicError
from web3.middleware.base import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse

from ledger.errors import LedgerError

logger = logging.getLogger(__name__)

CHAIN_FILE = "chain.sqlite"
LOCK_FILE = "chain.lock"
# The chain id eth-tester's chain class reports; fixed, so keystores and deployments stay valid.
EMBEDDED_CHAIN_ID = 131277322940537

_MISSING = object()


class SqliteKeyValueStore(BaseDB):
    """A py-evm key-value store in one SQLite table; `commit()` writes pending changes atomically."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._pending: dict[bytes, bytes | object] = {}
        self._lock = threading.RLock()
        uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
        try:
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            if not read_only:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
        except sqlite3.Error as exc:
            raise LedgerError(
                "The embedded ledger's database cannot be opened.", detail=f"{path}: {exc}"
            ) from exc

    def __getitem__(self, key: bytes) -> bytes:
        with self._lock:
            value = self._pending.get(key, _MISSING)
            if value is None:
                raise KeyError(key)
            if value is not _MISSING:
                return value  # type: ignore[return-value]
            row = self._conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return bytes(row[0])

    def __setitem__(self, key: bytes, value: bytes) -> None:
        with self._lock:
            self._pending[key] = value

    def __delitem__(self, key: bytes) -> None:
        if key not in self:
            raise KeyError(key)
        with self._lock:
            self._pending[key] = None  # a tombstone until the next commit

    def _exists(self, key: bytes) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def is_empty(self) -> bool:
        """True for a fresh file (no genesis written yet)."""
        with self._lock:
            return not self._pending and self._conn.execute("SELECT 1 FROM kv LIMIT 1").fetchone() is None

    def commit(self) -> None:
        """Writes every pending change in one SQLite transaction; a read-only store drops them."""
        with self._lock:
            if not self._pending:
                return
            if self.read_only:
                # Reads (eth_call, gas estimates) may leave scratch trie nodes; they never persist.
                self._pending.clear()
                return
            puts = [(k, v) for k, v in self._pending.items() if v is not None]
            dels = [(k,) for k, v in self._pending.items() if v is None]
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", puts)
                self._conn.executemany("DELETE FROM kv WHERE k = ?", dels)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise LedgerError("The embedded ledger could not be saved to disk.", detail=str(exc)) from exc
            self._pending.clear()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def measured_gas_estimate(state: StateAPI, transaction: SignedTransactionAPI) -> int:
    """Gas for a transaction from one run at the block limit plus a margin, checked by a second run.

    py-evm's default binary search runs the transaction a dozen times, which made estimation
    most of the embedded chain's cost; the contract makes no external calls, so one measured
    run (before refunds) bounds what it needs. Falls back to the binary search if the check fails.
    """

    def run(gas: int) -> Any:
        snapshot = state.snapshot()
        try:
            spoof = cast(SignedTransactionAPI, SpoofTransaction(transaction, gas=gas, gas_price=0))
            return state.apply_transaction(spoof)
        finally:
            state.revert(snapshot)

    full = run(state.gas_limit)
    full.raise_if_error()
    needed = transaction.intrinsic_gas + full.get_gas_used()
    estimate = min(state.gas_limit, needed + needed // 4 + 5000)
    if run(estimate).is_error:
        return int(binary_gas_search(state, transaction, tolerance=1))
    return estimate


class PersistentPyEVMBackend(PyEVMBackend):
    """eth-tester's py-evm backend over a `SqliteKeyValueStore`, committing after every block."""

    def __init__(self, store: SqliteKeyValueStore, num_accounts: int = 10) -> None:
        self._store = store
        self._num_accounts = num_accounts
        super().__init__()

    def reset_to_genesis(self, *args: Any, **kwargs: Any) -> None:
        """Reopens the stored chain, or writes its genesis into an empty store."""
        keys = get_default_account_keys(quantity=self._num_accounts)
        # eth-tester defines its chain class inside `setup_tester_chain`; build a throwaway
        # in-memory chain once to obtain the class with eth-tester's exact VM configuration.
        _, scratch = setup_tester_chain(num_accounts=self._num_accounts)
        chain_class = type(scratch)
        chain_class.gas_estimator = staticmethod(measured_gas_estimate)
        base_db = AtomicDB(self._store)
        if self._store.is_empty():
            if self._store.read_only:
                raise LedgerError("The embedded ledger has no chain yet: nothing has been recorded.")
            genesis_state = generate_genesis_state_for_keys(keys)
            self.chain = chain_class.from_genesis(base_db, get_default_genesis_params(), genesis_state)
            self._store.commit()
        else:
            self.chain = chain_class(base_db)
        self.account_keys = keys

    def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = ZERO_ADDRESS) -> tuple[bytes, ...]:
        hashes = super().mine_blocks(num_blocks, coinbase)
        self._store.commit()
        return hashes  # type: ignore[no-any-return]

    def revert_to_snapshot(self, snapshot: Any) -> None:
        raise LedgerError("The embedded ledger's history cannot be rewound.")


class EmbeddedChain:
    """The in-process chain of a data directory: an eth-tester provider over persisted py-evm state."""

    def __init__(self, directory: Path, *, read_only: bool = False) -> None:
        self.directory = directory
        self.read_only = read_only
        self._lock_file: IO[str] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        if not read_only:
            self._lock_file = _acquire_writer_lock(directory / LOCK_FILE)
        elif not (directory / CHAIN_FILE).exists():
            raise LedgerError(
                "The embedded ledger has no chain yet: nothing has been recorded.",
                detail=str(directory / CHAIN_FILE),
            )
        self.store = SqliteKeyValueStore(directory / CHAIN_FILE, read_only=read_only)
        try:
            self.backend = PersistentPyEVMBackend(self.store)
        except Exception:
            self.close()
            raise
        self.tester = EthereumTester(self.backend)
        self.provider = EthereumTesterProvider(self.tester)

    def latest_timestamp(self) -> int:
        return int(self.tester.get_block_by_number("latest")["timestamp"])

    def advance_time(self, timestamp: float) -> None:
        """Mines a block whose time is at least `timestamp`: a deadline on the embedded chain is
        reached at once instead of waited for (eth-tester's time travel)."""
        if self.read_only:
            raise LedgerError("A read-only embedded ledger cannot mine blocks.")
        target = math.ceil(timestamp)
        if self.latest_timestamp() >= target:
            return
        if int(self.tester.get_block_by_number("pending")["timestamp"]) < target:
            self.tester.time_travel(target)
        # eth-tester's time travel may land a second short; each further block is a second later.
        while self.latest_timestamp() < target:
            self.tester.mine_blocks(1)

    def close(self) -> None:
        """Releases the database and the writer lock."""
        self.store.close()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


class TesterRevertMiddleware(Web3Middleware):
    """Turns eth-tester's TransactionFailed into the ContractLogicError a JSON-RPC node produces."""

    def wrap_make_request(self, make_request: Any) -> Any:
        def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
            try:
                return make_request(method, params)  # type: ignore[no-any-return]
            except TransactionFailed as exc:
                raise ContractLogicError(str(exc.args[0]) if exc.args else "execution reverted") from exc

        return middleware


def embedded_web3(w3: Web3) -> Web3:
    """Adds the embedded chain's adaptations to a Web3 built on its provider."""
    w3.middleware_onion.add(TesterRevertMiddleware, name="medfed_tester_reverts")
    return w3


def _acquire_writer_lock(path: Path) -> IO[str]:
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the chain's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise LedgerError(
            "The embedded ledger is in use by another MedFedChain process; close it and retry.",
            detail=str(path),
        ) from exc
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle

"""The embedded chain: py-evm behind eth-tester, its state kept in a SQLite file in the data directory.

eth-tester keeps its chain in a dict; py-evm only needs a key-value store under its `AtomicDB`.
`SqliteKeyValueStore` is that store: writes collect in memory and reach the file in one SQLite
transaction after each mined block, so a crash leaves the chain at the last whole block, and a
later process (the app reopened, `ledger audit`) continues from where the previous one stopped.
One process at a time may write (an exclusive lock file); others may open it read-only.

Before anything reads or writes it, `verify_chain_file` checks the file: SQLite's own integrity
check, every hash-keyed record (trie nodes, headers, code) against its keccak, the canonical chain
and its indexes, and every trie node the head's state, transactions and receipts reach. A damaged
file is refused (`ChainStoreDamaged`), and a missing one is never silently replaced by a fresh
chain when the data directory recorded a contract on it (`ChainFileMissing`).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

import rlp
from eth.abc import SignedTransactionAPI, StateAPI
from eth.constants import BLANK_ROOT_HASH, EMPTY_SHA3, GENESIS_PARENT_HASH
from eth.db.atomic import AtomicDB
from eth.db.backends.base import BaseDB
from eth.db.backends.memory import MemoryDB
from eth.db.chain import ChainDB
from eth.db.schema import SchemaV1
from eth.estimators.gas import binary_gas_search
from eth.rlp.accounts import Account
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
from eth_utils import keccak
from filelock import lock_descriptor, unlock_descriptor
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import ContractLogicError
from web3.middleware.base import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse

from ledger.errors import ChainFileMissing, ChainStoreDamaged, LedgerError

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


# -- the chain file's integrity -------------------------------------------------------------------

_INDEX_PREFIXES = (b"block-number-to-hash:", b"block-hash-to-score:", b"transaction-hash-to-block:",
                   b"withdrawal-hash-to-block:")
_SINGLE_KEYS = (SchemaV1.make_canonical_head_hash_lookup_key(), SchemaV1.make_chain_gaps_lookup_key(),
                SchemaV1.make_header_chain_gaps_lookup_key(), SchemaV1.make_checkpoint_headers_key())
_SHOWN = 3  # records named per kind of problem; the count says how many more


def verify_chain_file(path: Path) -> list[str]:
    """What is damaged in a chain file, in words (empty: nothing found), read without writing.

    A file SQLite cannot read, or whose pages fail `PRAGMA integrity_check`, is damaged as a
    whole; otherwise its records are checked (`verify_chain_records`).
    """
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [f"SQLite cannot open it ({exc})"]
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        if rows != ["ok"]:
            return [f"SQLite's integrity check fails: {'; '.join(rows[:_SHOWN])}"]
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kv'").fetchone() is None:
            return ["it holds no chain table (it is not a MedFedChain chain file)"]
        records = {bytes(k): bytes(v) for k, v in conn.execute("SELECT k, v FROM kv")}
    except sqlite3.DatabaseError as exc:  # "file is not a database", "disk image is malformed"
        return [f"SQLite cannot read it ({exc})"]
    finally:
        conn.close()
    return verify_chain_records(records) if records else []


def verify_chain_records(records: Mapping[bytes, bytes]) -> list[str]:
    """The problems of a chain's key-value records: every hash-keyed record against its keccak,
    unknown keys, the canonical chain from its head to genesis with its number, score and
    transaction indexes, and every trie node of the head's state, the accounts' storage and code,
    and each block's transactions and receipts."""
    changed = [k for k, v in records.items() if len(k) == 32 and keccak(v) != k]
    unknown = [k for k in records if len(k) != 32 and k not in _SINGLE_KEYS and not k.startswith(_INDEX_PREFIXES)]
    problems = []
    if changed:
        problems.append(f"{len(changed)} records do not match their hash (trie nodes, block headers or contract "
                        f"code whose bytes changed): {_names(changed)}")
    if unknown:
        problems.append(f"{len(unknown)} records have keys py-evm never writes: {_names(unknown)}")
    try:
        problems += _verify_chain(records)
    except (rlp.DecodingError, rlp.DeserializationError, ValueError, TypeError, LookupError) as exc:
        # A damaged record decodes to garbage; what was found so far is the report.
        problems.append(f"a chain record cannot be decoded ({type(exc).__name__}: {exc})")
    return problems


def _names(keys: list[bytes]) -> str:
    shown = ", ".join(k.hex() if len(k) == 32 else repr(k)[2:-1] for k in keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _verify_chain(records: Mapping[bytes, bytes]) -> list[str]:
    head_key = SchemaV1.make_canonical_head_hash_lookup_key()
    if head_key not in records:
        return ["the record of the chain's head block is missing"]
    chaindb = ChainDB(MemoryDB(dict(records)))
    problems: list[str] = []
    block_hash = records[head_key]
    head = None
    scores: list[tuple[int, bytes, int]] = []  # (number, hash, difficulty), head first
    seen_transactions = 0
    visited: set[bytes] = set()
    while True:
        if block_hash in visited:  # a changed parent hash can point back up the chain
            return problems + [f"the chain's parent links loop at block {block_hash.hex()}"]
        visited.add(block_hash)
        if block_hash not in records:
            return problems + [f"the header of block {block_hash.hex()} is missing"]
        header = chaindb.get_block_header_by_hash(block_hash)
        number = header.block_number
        head = head if head is not None else number
        if scores and number != scores[-1][0] - 1:
            problems.append(f"block {scores[-1][0]}'s parent is numbered {number}")
        index = records.get(SchemaV1.make_block_number_to_hash_lookup_key(number))
        if index is None or rlp.decode(index) != block_hash:
            problems.append(f"the index of block {number} does not name the canonical block {block_hash.hex()}")
        scores.append((number, block_hash, header.difficulty))
        missing = _missing_nodes(records, header.transaction_root) + _missing_nodes(records, header.receipt_root)
        if missing:
            problems.append(f"block {number}'s transactions or receipts lack trie nodes {_names(missing)}")
        else:
            for i, tx_hash in enumerate(chaindb.get_block_transaction_hashes(header)):
                seen_transactions += 1
                entry = records.get(SchemaV1.make_transaction_hash_to_block_lookup_key(tx_hash))
                if entry is None or chaindb.get_transaction_index(tx_hash) != (number, i):
                    problems.append(f"the index of transaction {tx_hash.hex()} does not name block {number}, "
                                    f"position {i}")
        if header.uncles_hash not in records and header.uncles_hash != keccak(rlp.encode([])):
            problems.append(f"block {number}'s uncle list is missing")
        if number == 0:
            if header.parent_hash != GENESIS_PARENT_HASH:
                problems.append("the genesis block has a parent")
            break
        block_hash = header.parent_hash
    problems += _verify_scores(records, scores)
    extra = [k for k in records if k.startswith(b"block-number-to-hash:") and int(k.split(b":")[1]) > head]
    if extra:
        problems.append(f"{len(extra)} block number indexes point past the chain's head block {head}")
    indexed = sum(1 for k in records if k.startswith(b"transaction-hash-to-block:"))
    if indexed != seen_transactions:
        problems.append(f"{indexed} transactions are indexed, the canonical chain holds {seen_transactions}")
    expected_gaps = ((), head + 1)
    for name, gaps in (("block", chaindb.get_chain_gaps()), ("header", chaindb.get_header_chain_gaps())):
        if gaps != expected_gaps:
            problems.append(f"the {name} gap record says {gaps}, not a whole chain to block {head}")
    head_header = chaindb.get_block_header_by_hash(records[head_key])
    problems += _verify_state(records, head_header.state_root, head)
    return problems


def _verify_scores(records: Mapping[bytes, bytes], chain: list[tuple[int, bytes, int]]) -> list[str]:
    """Each block's score is its parent's plus its difficulty (plus its number after the merge,
    where the difficulty is 0: py-evm's rule)."""
    problems = []
    total = 0
    for number, block_hash, difficulty in reversed(chain):
        total += difficulty or number
        raw = records.get(SchemaV1.make_block_hash_to_score_lookup_key(block_hash))
        if raw is None or rlp.decode(raw, sedes=rlp.sedes.big_endian_int) != total:
            problems.append(f"the score index of block {number} is wrong or missing")
    return problems


def _verify_state(records: Mapping[bytes, bytes], state_root: bytes, head: int) -> list[str]:
    """Every node of the head's state trie, of each account's storage trie, and its code, held."""
    missing = _missing_nodes(records, state_root)
    if missing:
        return [f"the state at block {head} lacks trie nodes {_names(missing)}"]
    problems = []
    for _, value in _trie_leaves(records, state_root):
        account = rlp.decode(value, sedes=Account)
        storage = _missing_nodes(records, account.storage_root)
        if storage:
            problems.append(f"the storage of an account at block {head} (storage root "
                            f"{account.storage_root.hex()}) lacks trie nodes {_names(storage)}")
        if account.code_hash != EMPTY_SHA3 and account.code_hash not in records:
            problems.append(f"the code of an account at block {head} ({account.code_hash.hex()}) is missing")
    return problems


def trie_nodes(records: Mapping[bytes, bytes], root: bytes) -> Iterator[tuple[bytes, list[Any] | None]]:
    """(hash, decoded node or None if the store lacks it) of every hash-referenced node of a trie."""
    if root == BLANK_ROOT_HASH:
        return
    stack = [root]
    while stack:
        node_hash = stack.pop()
        raw = records.get(node_hash)
        if raw is None:
            yield node_hash, None
            continue
        node = rlp.decode(raw)
        yield node_hash, node
        stack.extend(_child_refs(node))


def _child_refs(node: list[Any]) -> Iterator[bytes]:
    """The hashes a node references, descending into nodes embedded inline (under 32 bytes)."""
    if len(node) == 17:
        children = node[:16]
    elif len(node) == 2 and not node[0][0] & 0x20:  # an extension (a leaf's key has the 0x20 flag)
        children = [node[1]]
    else:
        return
    for child in children:
        if isinstance(child, list):
            yield from _child_refs(child)
        elif len(child) == 32:
            yield child


def _missing_nodes(records: Mapping[bytes, bytes], root: bytes) -> list[bytes]:
    return [h for h, node in trie_nodes(records, root) if node is None]


def _trie_leaves(records: Mapping[bytes, bytes], root: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(node hash, value) of every leaf of a complete trie, inline nodes included."""
    def leaves(node: list[Any]) -> Iterator[bytes]:
        if len(node) == 17:
            if node[16]:
                yield node[16]
            for child in node[:16]:
                if isinstance(child, list):
                    yield from leaves(child)
        elif len(node) == 2:
            if node[0][0] & 0x20:
                yield node[1]
            elif isinstance(node[1], list):
                yield from leaves(node[1])

    for node_hash, node in trie_nodes(records, root):
        if node is not None:
            for value in leaves(node):
                yield node_hash, value


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

    def __init__(self, directory: Path, *, read_only: bool = False, deployment: Path | None = None) -> None:
        """Opens the chain in `directory` after checking its file; `deployment` is the record of a
        contract deployed on it (if that exists, a missing or empty chain is refused, not replaced)."""
        self.directory = directory
        self.read_only = read_only
        self._lock_file: IO[str] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        if not read_only:
            self._lock_file = _acquire_writer_lock(directory / LOCK_FILE)
        try:
            self._check_file(deployment)
            self.store = SqliteKeyValueStore(directory / CHAIN_FILE, read_only=read_only)
        except BaseException:
            self._release_lock()
            raise
        try:
            if self.store.is_empty() and (read_only or (deployment is not None and deployment.exists())):
                raise ChainFileMissing(str(self.store.path), _existing(deployment), empty=True)
            self.backend = PersistentPyEVMBackend(self.store)
        except BaseException:
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

    def _check_file(self, deployment: Path | None) -> None:
        """Refuses a damaged chain file, and a missing one where a chain was (or, read-only, any)."""
        path = self.directory / CHAIN_FILE
        if _is_absent(path):
            if self.read_only or _existing(deployment) is not None:
                raise ChainFileMissing(str(path), _existing(deployment), empty=path.exists())
            return
        problems = verify_chain_file(path)
        if problems:
            raise ChainStoreDamaged(str(path), problems)

    def close(self) -> None:
        """Releases the database and the writer lock."""
        self.store.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            unlock_descriptor(self._lock_file.fileno())
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


def _is_absent(path: Path) -> bool:
    """No chain file, or an empty one whose write-ahead log holds nothing either (a live chain's
    first blocks may sit in the log until SQLite checkpoints them into the file)."""
    if not path.exists():
        return True
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size == 0 and (not wal.exists() or wal.stat().st_size == 0)


def _existing(path: Path | None) -> str | None:
    return str(path) if path is not None and path.exists() else None


def _acquire_writer_lock(path: Path) -> IO[str]:
    """The exclusive lock of the chain's one writer (flock on Unix, LockFileEx on Windows); the
    operating system drops it when the file is closed or its process dies."""
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the chain's lifetime
    try:
        locked = lock_descriptor(handle.fileno(), blocking=False)
    except OSError:
        handle.close()
        raise
    if not locked:
        handle.close()
        raise LedgerError(
            "The embedded ledger is in use by another MedFedChain process; close it and retry.",
            detail=str(path),
        )
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle

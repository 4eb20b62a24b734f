"""Opening the federation ledger of a data directory: node, contract deployment, keystore, funding.

`LedgerSettings.rpc_url` picks the node (None: the embedded chain persisted in the data
directory); everything above the provider is the same for both. Layout under `home`:

    ledger/chain/chain.sqlite          the embedded chain (absent with --rpc)
    ledger/deployments/<chain id>.json the federation contract's address on that chain
    keystore/<name>.json               encrypted keyfiles: 'admin' and one per hospital
    blobs/<sha256>                     content-addressed model blobs

(the last two can be moved with `keystore_path` / `blob_path`, as the app's settings allow).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3

from core.files import write_atomic
from ledger.accounts import DEFAULT_SCRYPT_N, Keystore, keystore_password
from ledger.client import LedgerClient, await_receipt
from ledger.embedded import EMBEDDED_CHAIN_ID, EmbeddedChain, embedded_web3
from ledger.errors import ContractMissing, LedgerError, UnknownAccount
from ledger.node import RetryPolicy, connect_provider, connect_rpc

logger = logging.getLogger(__name__)

ADMIN = "admin"
EMBEDDED_ENDPOINT = "embedded chain"
FUNDING = Web3.to_wei(10, "ether")
LOW_BALANCE = Web3.to_wei(1, "ether")


@dataclass(frozen=True)
class LedgerSettings:
    """Where the ledger lives and how to reach it; `rpc_url=None` means the embedded chain."""

    home: Path
    rpc_url: str | None = None
    contract_address: str | None = None  # join an existing deployment instead of the recorded one
    keystore_password: str | None = None  # None: MEDFED_KEYSTORE_PASSWORD (demo default if embedded)
    funder: str | None = None  # keystore name of an account that pays others' gas on a real network
    receipt_timeout: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    scrypt_n: int = DEFAULT_SCRYPT_N
    keystore_path: Path | None = None  # None: home/keystore
    blob_path: Path | None = None  # None: home/blobs

    @property
    def ledger_dir(self) -> Path:
        return self.home / "ledger"

    @property
    def keystore_dir(self) -> Path:
        return self.keystore_path or self.home / "keystore"

    @property
    def blob_dir(self) -> Path:
        return self.blob_path or self.home / "blobs"

    @property
    def endpoint(self) -> str:
        return self.rpc_url or EMBEDDED_ENDPOINT


class LedgerSession:
    """An open connection to the federation contract, with the data directory's keystore."""

    def __init__(self, settings: LedgerSettings, *, read_only: bool = False) -> None:
        self.settings = settings
        self.read_only = read_only
        self.chain: EmbeddedChain | None = None
        if settings.rpc_url is None:
            deployment = settings.ledger_dir / "deployments" / f"{EMBEDDED_CHAIN_ID}.json"
            self.chain = EmbeddedChain(settings.ledger_dir / "chain", read_only=read_only, deployment=deployment)
            self.w3 = embedded_web3(connect_provider(self.chain.provider, EMBEDDED_ENDPOINT, settings.retry))
        else:
            self.w3 = connect_rpc(settings.rpc_url, settings.retry)
        self._keystore: Keystore | None = None
        try:
            self.client = self._attach()
        except BaseException:
            self.close()
            raise

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    @property
    def keystore(self) -> Keystore:
        """The data directory's keystore, unlocked lazily: read-only work needs no password."""
        if self._keystore is None:
            password = self.settings.keystore_password or keystore_password(
                allow_demo=self.settings.rpc_url is None
            )
            self._keystore = Keystore(self.settings.keystore_dir, password, scrypt_n=self.settings.scrypt_n)
        return self._keystore

    def admin(self) -> LocalAccount:
        """The consortium admin's account (created with the deployment on a fresh ledger)."""
        if not self.keystore.exists(ADMIN):
            raise UnknownAccount(
                "This data directory holds no ledger admin keystore; only the consortium admin may do this.",
                hospital_id=None,
                detail=str(self.keystore.path_of(ADMIN)),
            )
        return self.keystore.unlock(ADMIN)

    def _deployment_path(self) -> Path:
        return self.settings.ledger_dir / "deployments" / f"{int(self.w3.eth.chain_id)}.json"

    def _attach(self) -> LedgerClient:
        """Finds the federation contract on this chain, deploying it on a fresh ledger."""
        kwargs: dict[str, Any] = {"endpoint": self.endpoint, "receipt_timeout": self.settings.receipt_timeout}
        address = self.settings.contract_address
        path = self._deployment_path()
        if address is None and path.exists():
            address = json.loads(path.read_text(encoding="utf-8"))["address"]
        if address is not None:
            client = LedgerClient(self.w3, address, **kwargs)
            if not client.has_code():
                raise ContractMissing(
                    "The ledger node holds no federation contract at the recorded address: it is a "
                    "different or reset chain.",
                    detail=f"{address} on {self.endpoint}",
                )
            return client
        if self.read_only:
            raise LedgerError(
                "No federation ledger has been set up in this data directory yet.", detail=str(path)
            )
        admin = self.keystore.unlock_or_create(ADMIN)
        self.ensure_funded(admin.address)
        client, receipt = LedgerClient.deploy(self.w3, admin, **kwargs)
        _write_json(
            path,
            {
                "address": client.address,
                "chain_id": client.chain_id,
                "block": receipt["blockNumber"],
                "admin": admin.address,
                "endpoint": self.endpoint,
            },
        )
        logger.info("deployed the federation contract at %s on %s", client.address, self.endpoint)
        return client

    def ensure_funded(self, address: str) -> None:
        """Tops up an account's gas money from the funder (a keystore, or the dev node's account)."""
        funder = self.keystore.unlock(self.settings.funder) if self.settings.funder is not None else None
        fund_account(self.w3, address, funder=funder, timeout=self.settings.receipt_timeout,
                     endpoint=self.endpoint)

    def close(self) -> None:
        if self.chain is not None:
            self.chain.close()
            self.chain = None


def open_ledger(settings: LedgerSettings, *, read_only: bool = False) -> LedgerSession:
    """Opens the ledger of a data directory; read-only sessions need no keystore password."""
    return LedgerSession(settings, read_only=read_only)


def fund_account(
    w3: Web3, address: str, *, funder: LocalAccount | None, timeout: float, endpoint: str
) -> None:
    """Tops up an account's gas money from `funder`, or else from a development node's own
    account; free-gas networks and accounts with enough balance are left alone."""
    if int(w3.eth.gas_price) == 0 or w3.eth.get_balance(to_checksum_address(address)) >= LOW_BALANCE:
        return  # free-gas permissioned networks (Besu with min-gas-price 0) need no funding
    if funder is not None:
        tx: dict[str, Any] = {
            "to": address,
            "value": FUNDING,
            "gas": 21000,
            "chainId": int(w3.eth.chain_id),
            "nonce": w3.eth.get_transaction_count(funder.address, "pending"),
            "maxFeePerGas": 2 * int(w3.eth.gas_price),
            "maxPriorityFeePerGas": 0,
        }
        signed = funder.sign_transaction(tx)  # type: ignore[arg-type]
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    else:
        dev_accounts = w3.eth.accounts  # unlocked by development nodes only
        if not dev_accounts:
            raise UnknownAccount(
                "A ledger account has no funds for gas: fund it, or configure a funder keystore.",
                detail=address,
            )
        tx_hash = w3.eth.send_transaction({"from": dev_accounts[0], "to": address, "value": FUNDING})
    await_receipt(w3, tx_hash, timeout=timeout, endpoint=endpoint)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(payload, indent=1))

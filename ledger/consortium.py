"""The consortium file on the ledger side: the admin's EIP-191 signature, and the chain checked
against the file (chain id, contract code, admin, coordinator, members) when a site starts.

`recover_signer` is the `RecoverSigner` that `core.federation.consortium.verify_signature`
takes; `deploy_federation` and `register_member` are the admin's two chain steps.
"""

from __future__ import annotations

import logging

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature, ValidationError
from eth_utils import to_checksum_address
from web3 import Web3

from core.federation.consortium import Consortium, MemberEntry, same_address
from ledger.client import LedgerClient
from ledger.errors import (
    ConsortiumMismatch,
    RoundInProgress,
    UnregisteredAccount,
    WrongAdmin,
    WrongChain,
    WrongContract,
)

logger = logging.getLogger(__name__)


def recover_signer(message: bytes, signature: str) -> str:
    """The address whose key made `signature` over `message` (EIP-191 "personal" message)."""
    try:
        return str(Account.recover_message(encode_defunct(primitive=message), signature=signature))
    except (BadSignature, ValidationError, TypeError) as exc:
        raise ValueError(f"not a valid signature: {exc}") from exc


def sign_consortium(consortium: Consortium, admin: LocalAccount) -> Consortium:
    """The record with `admin`'s signature over its canonical form; only the admin it names signs."""
    if not same_address(admin.address, consortium.admin):
        raise WrongAdmin("Only the consortium's admin can sign its file.", expected=consortium.admin,
                         actual=admin.address)
    signed = admin.sign_message(encode_defunct(primitive=consortium.canonical_bytes()))
    return consortium.with_signature(signed.signature.to_0x_hex())


def deploy_federation(
    w3: Web3, admin: LocalAccount, *, coordinator: str, coordinator_store_url: str, endpoint: str,
    receipt_timeout: float = 120.0,
) -> LedgerClient:
    """Deploys a fresh federation contract administered by `admin`, with its coordinator set."""
    client, receipt = LedgerClient.deploy(w3, admin, endpoint=endpoint, receipt_timeout=receipt_timeout)
    client.set_coordinator(admin, to_checksum_address(coordinator), coordinator_store_url)
    logger.info("deployed the federation contract at %s (block %s) on %s", client.address,
                receipt["blockNumber"], endpoint)
    return client


def register_member(client: LedgerClient, admin: LocalAccount, member: MemberEntry) -> bool:
    """Registers a hospital on chain (admin only, between rounds); False when it already is,
    with the same id and store URL, so that re-running after a crash is safe."""
    on_chain_admin = client.admin()
    if not same_address(on_chain_admin, admin.address):
        raise WrongAdmin("Only the consortium's admin can register hospitals, and this data directory's "
                         "account is not it.", expected=on_chain_admin, actual=admin.address)
    registered = {m.account.lower(): m for m in client.members() if m.account}
    existing = registered.get(member.address.lower())
    if existing is not None:
        if existing.hospital_id == member.hospital_id and existing.store_url == member.store_url:
            return False
        raise ConsortiumMismatch(
            f"The account {member.address} is already registered on the ledger as '{existing.hospital_id}' "
            f"({existing.store_url}).")
    open_round = client.open_round_id()
    if open_round:
        raise RoundInProgress("A round is open: hospitals can be added only between rounds. Try again "
                              "once it is final or aborted.", round_id=open_round)
    client.add_authority(admin, to_checksum_address(member.address), member.hospital_id, member.store_url)
    return True


def verify_on_chain(consortium: Consortium, client: LedgerClient, *, account: str | None = None) -> None:
    """Refuses a chain that does not hold the federation of `consortium`; with `account`, also an
    account that is neither one of its registered hospitals nor its coordinator."""
    if client.chain_id != consortium.chain_id:
        raise WrongChain(
            f"The ledger node serves a different chain (id {client.chain_id}) than the consortium "
            f"'{consortium.name}' (id {consortium.chain_id}): wrong chain. Check the node's URL.",
            expected=consortium.chain_id, actual=client.chain_id)
    expected_code = consortium.contract.code_hash
    actual_code = client.code_hash() if client.has_code() else None
    if actual_code is None:
        raise WrongContract(
            f"There is no contract at {client.address} on this chain: it is not the consortium "
            f"'{consortium.name}' (a reset or different network?).",
            address=client.address, expected=expected_code, actual=None)
    if actual_code.lower().removeprefix("0x") != expected_code:
        raise WrongContract(
            f"The contract at {client.address} is not the federation contract the consortium "
            f"'{consortium.name}' names (its code hash differs).",
            address=client.address, expected=expected_code, actual=actual_code)
    chain_admin = client.admin()
    if not same_address(chain_admin, consortium.admin):
        raise WrongAdmin(
            "The contract's admin is not the account that signed the consortium file of "
            f"'{consortium.name}'.",
            expected=consortium.admin, actual=chain_admin)
    on_chain, named = client.coordinator(), consortium.coordinator
    if on_chain.account is None or not same_address(on_chain.account, named.address) or (
        on_chain.store_url != named.store_url
    ):
        raise ConsortiumMismatch(
            f"The ledger names a different coordinator than the consortium file of '{consortium.name}': "
            "ask the admin for the current file.",
            detail=f"ledger {on_chain.account} {on_chain.store_url}, file {named.address} {named.store_url}")
    registered = {m.account.lower(): m for m in client.members() if m.account}
    for entry in consortium.members:
        found = registered.get(entry.address.lower())
        if found is None or found.hospital_id != entry.hospital_id or found.store_url != entry.store_url:
            on_ledger = "not registered" if found is None else f"ledger: {found.hospital_id} {found.store_url}"
            raise ConsortiumMismatch(
                f"The consortium file lists hospital '{entry.hospital_id}' ({entry.address}) as the ledger "
                "does not: ask the admin for the current file.", detail=on_ledger)
    if len(registered) > len(consortium.members):
        logger.warning("the ledger registers %d hospitals, the consortium file lists %d: the file is older",
                       len(registered), len(consortium.members))
    if account is None or same_address(account, consortium.coordinator.address):
        return
    if consortium.member(account) is None or account.lower() not in registered:
        raise UnregisteredAccount(
            f"This machine's account {account} is not a registered member of the consortium "
            f"'{consortium.name}' (unregistered account): send the address to the admin to be added.",
            account=account)


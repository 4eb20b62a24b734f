"""The ledger's exceptions: one root, `LedgerError`, whose `user_message` a hospital's IT person can act on.

Typed subclasses carry the data a caller needs to react (the revert reason, the hashes that
differ), in the manner of web3.py's `web3/exceptions.py`.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises; the GUI and CLI show `user_message`."""

    exit_code = 8  # main.py's documented code for a ledger problem

    def __init__(self, user_message: str, *, detail: str | None = None) -> None:
        super().__init__(user_message if detail is None else f"{user_message} ({detail})")
        self.user_message = user_message
        self.detail = detail


class NodeUnavailable(LedgerError):
    """The chain node could not be reached (after retries) or did not answer in time."""

    def __init__(self, user_message: str, *, endpoint: str, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.endpoint = endpoint


class TransactionReverted(LedgerError):
    """The contract refused a transaction; `reason` is the revert string from the contract."""

    def __init__(self, user_message: str, *, reason: str, function: str, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.reason = reason
        self.function = function


class ReceiptTimeout(NodeUnavailable):
    """A transaction was sent but not mined within the timeout; it may still be mined later."""

    def __init__(self, user_message: str, *, endpoint: str, tx_hash: str) -> None:
        super().__init__(user_message, endpoint=endpoint, detail=f"transaction {tx_hash}")
        self.tx_hash = tx_hash


class UnknownAccount(LedgerError):
    """A hospital has no account (keystore) or is not registered on the ledger."""

    def __init__(
        self, user_message: str, *, hospital_id: str | None = None, detail: str | None = None
    ) -> None:
        super().__init__(user_message, detail=detail)
        self.hospital_id = hospital_id


class KeystoreError(LedgerError):
    """A keystore file is missing, unreadable, or the password is wrong."""

    def __init__(self, user_message: str, *, path: str, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.path = path


class DecisionMismatch(LedgerError):
    """The chain decided a candidate differently from the federation engine."""

    def __init__(
        self, user_message: str, *, candidate_id: str, chain_accepted: bool, engine_accepted: bool
    ) -> None:
        super().__init__(
            user_message,
            detail=f"chain: {'accept' if chain_accepted else 'reject'}, "
            f"engine: {'accept' if engine_accepted else 'reject'}",
        )
        self.candidate_id = candidate_id
        self.chain_accepted = chain_accepted
        self.engine_accepted = engine_accepted


class ContractMissing(LedgerError):
    """The node has no federation contract at the address this data directory recorded."""


class AnvilUnavailable(LedgerError):
    """The anvil binary could not be found, installed or started."""


class ConsortiumMismatch(LedgerError):
    """The chain does not hold the federation that the consortium file describes."""


class WrongChain(ConsortiumMismatch):
    """The node serves a different chain than the consortium file names."""

    def __init__(self, user_message: str, *, expected: int, actual: int) -> None:
        super().__init__(user_message, detail=f"consortium chain id {expected}, node chain id {actual}")
        self.expected = expected
        self.actual = actual


class WrongContract(ConsortiumMismatch):
    """No contract, or a different one, lives at the address the consortium file names."""

    def __init__(self, user_message: str, *, address: str, expected: str, actual: str | None) -> None:
        super().__init__(user_message, detail=f"{address}: code hash {actual or 'none'}, expected {expected}")
        self.address = address
        self.expected = expected
        self.actual = actual


class WrongAdmin(ConsortiumMismatch):
    """The contract's admin is not the account that signed the consortium file (or that acts)."""

    def __init__(self, user_message: str, *, expected: str, actual: str) -> None:
        super().__init__(user_message, detail=f"expected {expected}, found {actual}")
        self.expected = expected
        self.actual = actual


class UnregisteredAccount(ConsortiumMismatch):
    """This machine's account is neither a registered hospital nor the coordinator."""

    def __init__(self, user_message: str, *, account: str, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.account = account


class RoundInProgress(LedgerError):
    """The registry changes only between rounds, and a round is open."""

    def __init__(self, user_message: str, *, round_id: int) -> None:
        super().__init__(user_message, detail=f"open round attempt {round_id}")
        self.round_id = round_id


class ChainStoreDamaged(LedgerError):
    """The embedded chain's file is not a readable SQLite database, or its records do not hold
    together (a trie node, header or index that changed); nothing is written to it."""

    def __init__(self, path: str, problems: list[str]) -> None:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(
            f"The embedded ledger's chain file {path} is damaged: {problems[0]}{more}. MedFedChain will not "
            "write to it; restore the file from a backup.",
            detail="; ".join(problems[1:6]) or None,
        )
        self.path = path
        self.problems = problems


class ChainFileMissing(LedgerError):
    """The embedded chain's file is absent (or empty); `deployment` is the record of the contract
    this data directory deployed on it, if any: then the chain was there and is gone."""

    def __init__(self, path: str, deployment: str | None, *, empty: bool = False) -> None:
        if deployment is None:
            message = "The embedded ledger has no chain yet: nothing has been recorded."
        else:
            state = "is empty" if empty else "is missing"
            message = (f"The ledger's chain file {path} {state}, but this data directory deployed its federation "
                       f"contract on it ({deployment}): restore the file from a backup; MedFedChain will not start "
                       "a new chain in its place.")
        super().__init__(message, detail=path)
        self.path = path
        self.deployment = deployment
        self.empty = empty

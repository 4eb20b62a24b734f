"""The permissioned Ethereum ledger: the federation contract, its client, `LedgerChannel` (the
round channel on chain), model stores served to peers, the audit.

Import the modules themselves (`ledger.channel`, `ledger.client`, ...): this package re-exports
nothing, so importing one part does not load the others.
"""

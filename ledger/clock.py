"""The ledger's clock: block time. Deadlines are block timestamps, so a role waits on blocks.

`NodeClock` polls the node until a block at or past the wanted time is mined (a real network,
or anvil with `--block-time`); `EmbeddedClock` mines that block itself, since nothing else
produces blocks on the embedded chain.
"""

from __future__ import annotations

import time
from typing import Protocol

from web3 import Web3

from ledger.embedded import EmbeddedChain
from ledger.errors import NodeUnavailable


class BlockClock(Protocol):
    def now(self) -> float:
        """The latest block's timestamp."""

    def wait_until(self, timestamp: float, *, poll: float = 0.5) -> None:
        """Returns once the latest block's timestamp is at least `timestamp`."""


class NodeClock:
    """Block time of an RPC node that mines on its own."""

    def __init__(self, w3: Web3, *, endpoint: str, max_wait: float | None = None) -> None:
        self._w3 = w3
        self._endpoint = endpoint
        self._max_wait = max_wait

    def now(self) -> float:
        return float(self._w3.eth.get_block("latest")["timestamp"])

    def wait_until(self, timestamp: float, *, poll: float = 0.5) -> None:
        started = time.monotonic()
        while self.now() < timestamp:
            if self._max_wait is not None and time.monotonic() - started > self._max_wait:
                raise NodeUnavailable(
                    "The ledger node mined no block past a round deadline in time; is it producing blocks?",
                    endpoint=self._endpoint,
                    detail=f"waited for block time {timestamp:.0f}",
                )
            time.sleep(poll)


class EmbeddedClock:
    """Block time of the embedded chain, which jumps to a deadline by mining a block there."""

    def __init__(self, chain: EmbeddedChain) -> None:
        self._chain = chain

    def now(self) -> float:
        return float(self._chain.latest_timestamp())

    def wait_until(self, timestamp: float, *, poll: float = 0.5) -> None:
        self._chain.advance_time(timestamp)

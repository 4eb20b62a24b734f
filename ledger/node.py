"""How the client reaches a chain node: the provider is a setting, the layers above it are one code path.

`connect_embedded` wraps the in-process chain, `connect_rpc` a JSON-RPC node (Besu, anvil);
both get the same `RetryMiddleware`, which retries transient transport errors with bounded
exponential backoff and then raises `NodeUnavailable`, as web3.py's own middleware wraps requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from web3 import Web3
from web3.middleware.base import Web3Middleware
from web3.providers.base import BaseProvider
from web3.types import RPCEndpoint, RPCResponse

from ledger.errors import NodeUnavailable

logger = logging.getLogger(__name__)

_TRANSIENT: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of transient node errors: `attempts` tries, sleeping `backoff * 2**i` between."""

    attempts: int = 5
    backoff: float = 0.2
    max_sleep: float = 3.0
    request_timeout: float = 10.0

    def delays(self) -> list[float]:
        return [min(self.backoff * 2**i, self.max_sleep) for i in range(self.attempts - 1)]


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, _TRANSIENT)


class RetryMiddleware(Web3Middleware):
    """Retries a request while the node is unreachable; gives up with NodeUnavailable."""

    policy: RetryPolicy = RetryPolicy()
    endpoint: str = "node"
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    @staticmethod
    def build(policy: RetryPolicy, endpoint: str) -> Callable[[Web3], RetryMiddleware]:
        def builder(w3: Web3) -> RetryMiddleware:
            middleware = RetryMiddleware(w3)
            middleware.policy = policy
            middleware.endpoint = endpoint
            return middleware

        return builder

    def wrap_make_request(self, make_request: Callable[[RPCEndpoint, Any], RPCResponse]) -> Any:
        def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
            delays = self.policy.delays()
            for attempt in range(len(delays) + 1):
                try:
                    return make_request(method, params)
                except Exception as exc:  # noqa: BLE001 - narrowed by _is_transient below
                    if not _is_transient(exc):
                        raise
                    if attempt == len(delays):
                        raise NodeUnavailable(
                            "The ledger node cannot be reached. Check that it is running and "
                            "reachable, then resume the round.",
                            endpoint=self.endpoint,
                            detail=f"{method}: {type(exc).__name__}: {exc}",
                        ) from exc
                    # A retry is routine; only giving up (NodeUnavailable) is the user's business.
                    logger.info("ledger node %s: %s failed (%s), retrying in %.1f s", self.endpoint, method,
                                exc, delays[attempt])
                    self.sleep(delays[attempt])
            raise AssertionError("unreachable")

        return middleware


def _with_retries(provider: BaseProvider, policy: RetryPolicy, endpoint: str) -> Web3:
    w3 = Web3(provider)
    # web3 accepts a builder (a callable taking w3) where its stubs only name middleware classes.
    w3.middleware_onion.add(RetryMiddleware.build(policy, endpoint), name="medfed_retry")  # type: ignore[arg-type]
    return w3


def connect_rpc(url: str, policy: RetryPolicy | None = None) -> Web3:
    """A Web3 on a JSON-RPC node at `url`; retries are ours, not the provider's."""
    policy = policy or RetryPolicy()
    provider = Web3.HTTPProvider(
        url, request_kwargs={"timeout": policy.request_timeout}, exception_retry_configuration=None
    )
    return _with_retries(provider, policy, url)


def connect_provider(provider: BaseProvider, endpoint: str, policy: RetryPolicy | None = None) -> Web3:
    """A Web3 on any provider (the embedded chain's), with the same middleware as an RPC node."""
    return _with_retries(provider, policy or RetryPolicy(), endpoint)

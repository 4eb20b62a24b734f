"""Model blobs served to and fetched from peers over HTTP(S), on top of core's `BlobStore`.

The chain holds only a model's SHA-256; its bytes live in `home/blobs/<sha256>` (the store in
`core.state.blobs`). Whatever a peer sends is hashed again and refused with `BlobMismatch` when it
is not the content the ledger names.

In a secure consortium (`StoreTls`) a store serves over mutual TLS: it presents its site's pinned
certificate and answers only clients presenting one of the consortium's pinned certificates (the
exact certificate, by fingerprint, after the handshake); a client presents its own and accepts
only the server certificate pinned for the store's owner. A plain consortium's stores stay HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from core.errors import BlobMismatch, BlobNotFound
from core.state.blobs import BlobStore, checked_digest, is_digest
from ledger.errors import LedgerError, NodeUnavailable

logger = logging.getLogger(__name__)

MAX_BLOB_BYTES = 1 << 31  # 2 GiB: far above any model the app trains, below anything absurd
HANDSHAKE_SECONDS = 30.0  # a client that connects and never finishes its TLS handshake is dropped


@dataclass(frozen=True)
class StoreTls:
    """A site's TLS material for the model stores of a secure consortium, as plain data: its own
    key and certificate files, every pinned certificate (PEM, one after the other), and the
    fingerprints (hex SHA-256 of the DER certificate) that may fetch and that each store presents."""

    key_path: Path
    cert_path: Path
    pinned_pem: str
    clients: frozenset[str]  # fingerprints of every pinned party: who may fetch from this store
    stores: Mapping[str, str]  # store owner (hospital id, or the coordinator) -> its certificate's fingerprint

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=self.pinned_pem)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies the server's chain against the pinned certificates only (no system CAs). Host
        names are not checked: a store is named by an address, its pinned certificate by
        `<party>.medfedchain`; `fetch_blob` checks instead that the server's certificate is exactly
        the owner's pinned one, which a host name check could only weaken."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=self.pinned_pem)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


def der_fingerprint(der: bytes) -> str:
    """Hex SHA-256 of a DER certificate: how a party's certificate is named."""
    return hashlib.sha256(der).hexdigest()


class _BlobHandler(BaseHTTPRequestHandler):
    store: BlobStore
    clients: frozenset[str] | None = None  # None: plain HTTP, anyone may fetch
    server_version = "MedFedChainBlobs/1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.clients is not None and not self._pinned_client():
            self.send_error(HTTPStatus.FORBIDDEN, "client certificate is not pinned by the consortium")
            return
        name = self.path.rstrip("/").rsplit("/", 1)[-1]
        if not self.path.startswith("/blobs/") or not is_digest(name):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            data = self.store.get(name)
        except BlobNotFound:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        except BlobMismatch:
            # Never serve a damaged blob; the peer would refuse it anyway.
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "stored blob is damaged")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _pinned_client(self) -> bool:
        """The handshake proved the client holds the key of a certificate chaining to a pinned one;
        only the pinned certificates themselves may fetch (a pinned key could sign others)."""
        der = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        allowed = der is not None and der_fingerprint(der) in (self.clients or frozenset())
        if not allowed:
            logger.warning("model store refused %s: its certificate is not pinned", self.client_address[0])
        return allowed

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        logger.debug("blob server: " + format, *args)


class _TlsBlobHTTPServer(ThreadingHTTPServer):
    """Each connection's TLS handshake runs on its own handler thread, so a silent client holds up
    only itself; a failed handshake (no certificate, one not chaining to a pinned one) is dropped."""

    def __init__(self, address: tuple[str, int], handler: type[_BlobHandler], context: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_SECONDS)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            logger.info("model store: TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def shutdown_request(self, request: Any) -> None:
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # detached by the TLS wrapper, or already closed by the peer
        self.close_request(request)


class BlobServer:
    """Serves a blob store read-only at http(s)://host:port/blobs/<sha256>, on a background thread;
    with `tls`, over mutual TLS to the consortium's pinned parties only."""

    def __init__(self, store: BlobStore, host: str = "127.0.0.1", port: int = 0, *,
                 tls: StoreTls | None = None) -> None:
        handler = type("BoundBlobHandler", (_BlobHandler,), {
            "store": store, "clients": tls.clients if tls is not None else None})
        if tls is None:
            self._server: ThreadingHTTPServer = ThreadingHTTPServer((host, port), handler)
        else:
            self._server = _TlsBlobHTTPServer((host, port), handler, tls.server_context())
        self._scheme = "http" if tls is None else "https"
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def start(self) -> BlobServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="blob-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> BlobServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PinnedAdapter(HTTPAdapter):
    """HTTPS to one store: the pinned-only context, and urllib3's `assert_fingerprint`, which
    compares the server's certificate with the owner's pinned one after the handshake."""

    def __init__(self, context: ssl.SSLContext, fingerprint: str) -> None:
        self._context = context
        self._fingerprint = fingerprint
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(ssl_context=self._context, assert_fingerprint=self._fingerprint)
        super().init_poolmanager(*args, **kwargs)


def _session(peer_url: str, tls: StoreTls | None, owner: str | None) -> requests.Session:
    session = requests.Session()
    if tls is None:
        return session
    session.trust_env = False  # no proxy or CA bundle from the environment between two pinned sites
    if not peer_url.lower().startswith("https://"):
        raise LedgerError(f"The model store of {owner or 'a member'} is not an https:// URL; in a secure "
                          "consortium every model store serves over mutual TLS.", detail=peer_url)
    fingerprint = tls.stores.get(owner or "")
    if fingerprint is None:
        raise LedgerError(f"The consortium file pins no TLS certificate for {owner or 'this'} model store's "
                          "owner; ask the admin for the current consortium file.", detail=peer_url)
    session.mount("https://", _PinnedAdapter(tls.client_context(), fingerprint))
    return session


def fetch_blob(peer_url: str, digest: str, store: BlobStore, *, timeout: float = 30.0,
               tls: StoreTls | None = None, owner: str | None = None) -> bytes:
    """Downloads a blob from a peer's blob server, verifies its hash and stores it locally. With
    `tls`, over mutual TLS to a server presenting exactly the certificate pinned for `owner`."""
    digest = checked_digest(digest)
    url = f"{peer_url.rstrip('/')}/blobs/{digest}"
    try:
        with _session(peer_url, tls, owner) as session, \
                session.get(url, timeout=timeout, stream=True) as response:
            if response.status_code == HTTPStatus.NOT_FOUND:
                raise BlobNotFound("The peer does not have this model.", digest=digest, detail=url)
            response.raise_for_status()
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(1 << 20):
                size += len(chunk)
                if size > MAX_BLOB_BYTES:
                    raise LedgerError(
                        "The peer sent a model larger than any the federation accepts.", detail=url
                    )
                chunks.append(chunk)
    except requests.exceptions.SSLError as exc:
        raise LedgerError("The peer's model server is not the one the consortium pinned, or it refused this "
                          "site's TLS certificate.", detail=f"{url}: {exc}") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise NodeUnavailable(
            "The peer's model server cannot be reached.", endpoint=peer_url, detail=str(exc)
        ) from exc
    except requests.HTTPError as exc:
        raise LedgerError("The peer's model server refused the download.", detail=str(exc)) from exc
    data = b"".join(chunks)
    try:
        store.put(data, expected=digest)
    except BlobMismatch as exc:
        raise BlobMismatch(
            f"The model received from the peer is not the one on the ledger: its bytes hash to "
            f"{exc.actual[:12]}…, the ledger names {exc.expected[:12]}….",
            expected=exc.expected,
            actual=exc.actual,
        ) from exc
    return data

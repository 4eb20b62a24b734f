"""Model blobs served to and fetched from peers over HTTP, on top of core's `BlobStore`.

The chain holds only a model's SHA-256; its bytes live in `home/blobs/<sha256>` (the store in
`core.state.blobs`). Whatever a peer sends is hashed again and refused with `BlobMismatch` when it
is not the content the ledger names.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from core.errors import BlobMismatch, BlobNotFound
from core.state.blobs import BlobStore, checked_digest, is_digest
from ledger.errors import LedgerError, NodeUnavailable

logger = logging.getLogger(__name__)

MAX_BLOB_BYTES = 1 << 31  # 2 GiB: far above any model the app trains, below anything absurd


class _BlobHandler(BaseHTTPRequestHandler):
    store: BlobStore
    server_version = "MedFedChainBlobs/1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
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

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        logger.debug("blob server: " + format, *args)


class BlobServer:
    """Serves a blob store read-only at http://host:port/blobs/<sha256>, on a background thread."""

    def __init__(self, store: BlobStore, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("BoundBlobHandler", (_BlobHandler,), {"store": store})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

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


def fetch_blob(peer_url: str, digest: str, store: BlobStore, *, timeout: float = 30.0) -> bytes:
    """Downloads a blob from a peer's blob server, verifies its hash and stores it locally."""
    digest = checked_digest(digest)
    url = f"{peer_url.rstrip('/')}/blobs/{digest}"
    try:
        with requests.get(url, timeout=timeout, stream=True) as response:
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

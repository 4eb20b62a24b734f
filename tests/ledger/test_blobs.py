"""Content-addressed model blobs: atomic writes, tamper detection, and fetching from a peer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from core.errors import BlobMismatch, BlobNotFound
from core.models.weights import from_bytes, to_bytes, weights_hash
from core.state.blobs import BlobStore, sha256_hex
from ledger.blobs import BlobServer, fetch_blob
from ledger.errors import LedgerError


def initial_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]


@pytest.fixture
def model() -> bytes:
    return to_bytes(initial_weights())


def test_put_names_the_blob_by_the_model_hash(tmp_path: Path, model: bytes) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(model)
    assert digest == weights_hash(initial_weights()) == sha256_hex(model)
    assert from_bytes(store.get(digest))[0].shape == (4, 3)
    assert [p.name for p in tmp_path.iterdir()] == [digest]  # no temporary files left behind
    with pytest.raises(BlobMismatch):
        store.put(model, expected="00" * 32)


def test_a_changed_byte_is_detected(tmp_path: Path, model: bytes) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(model)
    damaged = bytearray(model)
    damaged[-1] ^= 0x01
    store.path(digest).write_bytes(bytes(damaged))
    with pytest.raises(BlobMismatch) as exc:
        store.get(digest)
    assert exc.value.expected == digest and exc.value.actual == sha256_hex(bytes(damaged))
    # The message names the file's own hash as its bytes' and the name as the hash it should have.
    assert f"its bytes hash to {sha256_hex(bytes(damaged))[:12]}" in exc.value.user_message
    assert f"not to {digest[:12]}" in exc.value.user_message
    assert store.verify(digest) is False
    with pytest.raises(BlobNotFound):
        store.get("ab" * 32)


def test_fetch_from_a_peer_over_http(tmp_path: Path, model: bytes) -> None:
    peer, local = BlobStore(tmp_path / "peer"), BlobStore(tmp_path / "local")
    digest = peer.put(model)
    with BlobServer(peer) as server:
        assert fetch_blob(server.url, digest, local, timeout=5) == model
        with pytest.raises(BlobNotFound):
            fetch_blob(server.url, "cd" * 32, local, timeout=5)
        peer.path(digest).write_bytes(model[:-1] + b"\x00")  # the peer's copy is damaged
        local.path(digest).unlink()
        with pytest.raises(LedgerError):
            fetch_blob(server.url, digest, local, timeout=5)
    assert local.has(digest) is False


class _LyingHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"not the model the ledger names"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def lying_peer() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LyingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_peer_serving_other_bytes_is_refused(tmp_path: Path, model: bytes, lying_peer: str) -> None:
    local = BlobStore(tmp_path)
    with pytest.raises(BlobMismatch) as exc:
        fetch_blob(lying_peer, sha256_hex(model), local, timeout=5)
    sent = sha256_hex(b"not the model the ledger names")
    assert (exc.value.expected, exc.value.actual) == (sha256_hex(model), sent)
    assert exc.value.user_message == ("The model received from the peer is not the one on the ledger: its bytes "
                                      f"hash to {sent[:12]}…, the ledger names {sha256_hex(model)[:12]}….")
    assert not local.has(sha256_hex(model))

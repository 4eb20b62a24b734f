"""The model stores of a secure consortium over mutual TLS: only the pinned parties fetch, and a
client accepts only the store owner's pinned certificate. A plain store stays HTTP
(tests/ledger/test_blobs.py)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.federation.channel import COORDINATOR
from core.federation.memory_channel import BlobRefused
from core.state.blobs import BlobStore
from ledger.blobs import BlobServer, StoreTls, fetch_blob
from ledger.channel import LedgerChannel
from ledger.errors import LedgerError
from smpc.transport.identity import TlsIdentity, make_identity

MODEL = b"the global model of round 1" * 100


def write(directory: Path, identity: TlsIdentity) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls-key.pem").write_bytes(identity.key_pem)
    (directory / "tls-cert.pem").write_bytes(identity.cert_pem)
    return directory / "tls-key.pem", directory / "tls-cert.pem"


class Consortium:
    """The pinned parties of a secure consortium: two hospitals and the driver (the coordinator's
    store presents the driver's certificate), each site's StoreTls as the services build it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.identities = {name: make_identity(name) for name in ("st-mary", "st-anne", "driver")}
        self.bundle = "".join(i.cert_pem.decode("ascii") for i in self.identities.values())
        self.stores = {"st-mary": self.identities["st-mary"].fingerprint,
                       "st-anne": self.identities["st-anne"].fingerprint,
                       COORDINATOR: self.identities["driver"].fingerprint}

    def tls(self, party: str, identity: TlsIdentity | None = None) -> StoreTls:
        key, cert = write(self.root / party, identity or self.identities[party])
        return StoreTls(key_path=key, cert_path=cert, pinned_pem=self.bundle,
                        clients=frozenset(i.fingerprint for i in self.identities.values()), stores=self.stores)


@pytest.fixture
def consortium(tmp_path: Path) -> Consortium:
    return Consortium(tmp_path / "tls")


@pytest.fixture
def served(tmp_path: Path, consortium: Consortium):
    """St Mary's store over mutual TLS, holding one model."""
    store = BlobStore(tmp_path / "st-mary-blobs")
    digest = store.put(MODEL)
    with BlobServer(store, tls=consortium.tls("st-mary")) as server:
        yield server, digest


def signed_by(issuer: TlsIdentity, name: str) -> TlsIdentity:
    """A certificate the pinned key of `issuer` signs (it is a CA), not itself pinned."""
    issuer_cert = x509.load_pem_x509_certificate(issuer.cert_pem)
    issuer_key = serialization.load_pem_private_key(issuer.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))  # type: ignore[arg-type]
    return TlsIdentity(name, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()),
                       cert.public_bytes(serialization.Encoding.PEM))


def test_a_pinned_party_fetches_over_mutual_tls(tmp_path: Path, consortium: Consortium, served) -> None:
    server, digest = served
    assert server.url.startswith("https://127.0.0.1:")
    local = BlobStore(tmp_path / "st-anne-blobs")
    assert fetch_blob(server.url, digest, local, timeout=5, tls=consortium.tls("st-anne"), owner="st-mary") == MODEL
    assert local.get(digest) == MODEL


def test_a_client_without_a_certificate_fails_the_handshake(consortium: Consortium, served) -> None:
    server, digest = served
    context = ssl.create_default_context(cadata=consortium.bundle)
    context.check_hostname = False
    pinned = ssl.create_default_context(cadata=consortium.bundle)
    pinned.load_cert_chain(consortium.tls("st-anne").cert_path, consortium.tls("st-anne").key_path)
    assert _get_raw(server.url, digest, pinned).startswith(b"HTTP/1.0 200")  # the same request, with a cert
    with pytest.raises((ssl.SSLError, requests.exceptions.SSLError, requests.ConnectionError, OSError)):
        _get_raw(server.url, digest, context)


def test_plain_http_to_a_tls_store_gets_nothing(served) -> None:
    server, digest = served
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url.replace("https://", "http://") + f"/blobs/{digest}", timeout=5)


def test_an_unpinned_self_signed_certificate_is_refused(tmp_path: Path, consortium: Consortium, served) -> None:
    server, digest = served
    mallory = consortium.tls("mallory", make_identity("mallory"))
    with pytest.raises(LedgerError):
        fetch_blob(server.url, digest, BlobStore(tmp_path / "mallory"), timeout=5, tls=mallory, owner="st-mary")
    assert not BlobStore(tmp_path / "mallory").has(digest)


def test_a_certificate_signed_by_a_pinned_key_but_not_pinned_gets_403(tmp_path: Path, consortium: Consortium,
                                                                      served) -> None:
    server, digest = served
    # St Anne's pinned key signs a second certificate (for a machine the admin never pinned): its
    # chain verifies against the pinned bundle, so only the fingerprint check stops it.
    rogue = consortium.tls("rogue", signed_by(consortium.identities["st-anne"], "rogue"))
    with pytest.raises(LedgerError, match="refused the download") as exc:
        fetch_blob(server.url, digest, BlobStore(tmp_path / "rogue"), timeout=5, tls=rogue, owner="st-mary")
    assert "403" in (exc.value.detail or "")
    assert not BlobStore(tmp_path / "rogue").has(digest)


@pytest.mark.parametrize("presented", ["st-anne", "unpinned"])
def test_a_client_refuses_a_store_that_is_not_the_owners(tmp_path: Path, consortium: Consortium,
                                                         presented: str) -> None:
    """St Anne's store (or an unpinned machine) answering at St Mary's address is refused."""
    store = BlobStore(tmp_path / "impostor")
    digest = store.put(MODEL)
    identity = consortium.identities["st-anne"] if presented == "st-anne" else make_identity("st-mary")
    local = BlobStore(tmp_path / "driver-blobs")
    with BlobServer(store, tls=consortium.tls(f"impostor-{presented}", identity)) as server:
        with pytest.raises(LedgerError, match="not the one the consortium pinned"):
            fetch_blob(server.url, digest, local, timeout=5, tls=consortium.tls("driver"), owner="st-mary")
        # The same server is accepted as the store of whom it is.
        if presented == "st-anne":
            assert fetch_blob(server.url, digest, local, timeout=5, tls=consortium.tls("driver"),
                              owner="st-anne") == MODEL


def test_a_secure_client_refuses_a_plain_http_store(tmp_path: Path, consortium: Consortium) -> None:
    store = BlobStore(tmp_path / "plain")
    digest = store.put(MODEL)
    with BlobServer(store) as server:
        with pytest.raises(LedgerError, match="not an https:// URL"):
            fetch_blob(server.url, digest, BlobStore(tmp_path / "local"), timeout=5, tls=consortium.tls("driver"),
                       owner="st-mary")


def test_a_ledger_channel_fetches_from_the_owners_tls_store(tmp_path: Path, consortium: Consortium) -> None:
    """The coordinator's channel gets St Mary's update from her store; a member whose store
    presents someone else's certificate is skipped, and the reason is named."""
    mary, anne = BlobStore(tmp_path / "mary"), BlobStore(tmp_path / "anne")
    digest = mary.put(MODEL)
    anne.put(MODEL)
    with BlobServer(mary, tls=consortium.tls("st-mary")) as mary_server, \
            BlobServer(anne, tls=consortium.tls("anne-as-mary", consortium.identities["st-mary"])) as anne_server:
        registry = SimpleNamespace(
            members=lambda: [SimpleNamespace(hospital_id="st-mary", account="0x1", store_url=mary_server.url),
                             SimpleNamespace(hospital_id="st-anne", account="0x2", store_url=anne_server.url)],
            coordinator=lambda: SimpleNamespace(account="0xc", store_url=""))
        channel = LedgerChannel(registry, COORDINATOR, None, BlobStore(tmp_path / "coordinator"),  # type: ignore[arg-type]
                                clock=None, fetch_timeout=5, store_tls=consortium.tls("driver"))  # type: ignore[arg-type]
        assert channel.get_blob(digest, owner="st-mary") == MODEL
        # St Anne's store presents St Mary's certificate: not St Anne's, so it is refused.
        other = anne.put(b"only at st-anne")
        with pytest.raises(BlobRefused) as exc:
            channel.get_blob(other, owner="st-anne")
        assert "st-anne: The peer's model server is not the one the consortium pinned" in (exc.value.detail or "")


def _get_raw(url: str, digest: str, context: ssl.SSLContext) -> bytes:
    """A GET on a raw TLS socket, so the server's own refusal is what is observed."""
    host, port = url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="st-mary.medfedchain") as tls:
        tls.sendall(f"GET /blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = tls.recv(65536)
        if not answer:
            raise ConnectionResetError("the store closed the connection")
        return answer

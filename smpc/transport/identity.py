"""A party's TLS identity: an EC key made on its own machine and a self-signed certificate.

Every party of a secure federation (hospital, SMPC player, driver) makes its identity where it
runs; only the certificate travels, and the consortium file the admin signs lists each party's
certificate, so trust is pinned to exactly those certificates (no certificate authority to
trust or to compromise). The fingerprint (SHA-256 of the DER certificate) names a party on the
wire: a gateway maps the fingerprint of a connecting peer back to the party it was issued to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smpc.errors import SmpcError

KEY_FILE = "tls-key.pem"
CERT_FILE = "tls-cert.pem"
VALIDITY_DAYS = 3650  # pinned certificates are replaced by re-provisioning, not by expiry


class IdentityError(SmpcError):
    """A TLS identity is missing, unreadable or not a certificate."""


@dataclass(frozen=True)
class TlsIdentity:
    """A party's private key and certificate, both PEM."""

    name: str
    key_pem: bytes
    cert_pem: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_pem)


def fingerprint(cert_pem: bytes | str) -> str:
    """Hex SHA-256 of a PEM certificate's DER bytes."""
    data = cert_pem.encode("ascii") if isinstance(cert_pem, str) else cert_pem
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise IdentityError("A TLS certificate of the consortium cannot be read.", detail=str(exc)) from exc
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def make_identity(name: str) -> TlsIdentity:
    """A fresh P-256 key and a self-signed certificate naming `name` (also as DNS name, so
    TLS host name checks can be pinned to the party rather than to an address)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name(name))]), critical=False)
        # A pinned self-signed certificate is its own trust anchor, which TLS libraries accept
        # only from a certificate marked as a CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return TlsIdentity(
        name=name,
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
    )


def dns_name(name: str) -> str:
    """The DNS-safe label a party's certificate carries, used as the TLS target name."""
    label = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "party"
    return f"{label[:50]}.medfedchain"


def create_identity(directory: Path, name: str) -> TlsIdentity:
    """Makes and stores this machine's identity in `directory`; refuses to overwrite one."""
    directory = Path(directory)
    if (directory / KEY_FILE).exists():
        raise IdentityError(
            f"This data directory already has a TLS identity ({directory / KEY_FILE}); "
            "a party keeps the identity the consortium pinned.",
        )
    identity = make_identity(name)
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / KEY_FILE
    tmp = key_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(identity.key_pem)
    tmp.replace(key_path)
    (directory / CERT_FILE).write_bytes(identity.cert_pem)
    return identity


def load_identity(directory: Path, name: str | None = None) -> TlsIdentity:
    """This machine's identity from `directory`, with a clear error when it has none."""
    directory = Path(directory)
    try:
        key_pem = (directory / KEY_FILE).read_bytes()
        cert_pem = (directory / CERT_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise IdentityError(
            f"This data directory has no TLS identity yet ({directory}); make one with "
            "`tls create --home DIR` and have the admin add its certificate to the consortium.",
            detail=str(exc),
        ) from exc
    cert = x509.load_pem_x509_certificate(cert_pem)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return TlsIdentity(name=name or (str(common[0].value) if common else "party"), key_pem=key_pem,
                       cert_pem=cert_pem)

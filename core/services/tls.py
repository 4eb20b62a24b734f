"""This machine's TLS identity for a secure consortium: made here (`tls create`), shown, and checked
against the certificate the consortium pinned for its party.

Each party (hospital, SMPC player, driver) makes its key where it runs; only the certificate
travels to the admin, who pins it in the signed consortium file. The key never leaves `tls_dir`
and is never printed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.federation.channel import COORDINATOR
from core.federation.consortium import (
    SMPC_DRIVER,
    Consortium,
    ConsortiumError,
    TlsCertificateMismatch,
    TlsIdentityExists,
    TlsIdentityMissing,
)
from core.settings import Settings
from smpc.errors import SmpcError
from smpc.transport.identity import (
    CERT_FILE,
    KEY_FILE,
    TlsIdentity,
    create_identity,
    fingerprint,
    load_identity,
)

if TYPE_CHECKING:
    from ledger.blobs import StoreTls

logger = logging.getLogger(__name__)

__all__ = [
    "TlsIdentityInfo",
    "certificate_fingerprint",
    "check_tls_identity",
    "create_tls_identity",
    "has_tls_files",
    "read_certificate",
    "store_tls",
    "tls_identity",
]


@dataclass(frozen=True)
class TlsIdentityInfo:
    """What may be shown of this machine's identity: its name, fingerprint and certificate file."""

    name: str
    fingerprint: str  # hex SHA-256 of the DER certificate
    cert_path: Path


def create_tls_identity(settings: Settings, name: str | None = None) -> TlsIdentityInfo:
    """Makes this machine's TLS key and certificate in `settings.tls_dir`, named `name` (default:
    the hospital name of the settings); an existing identity is refused, never replaced."""
    directory = settings.tls_dir
    if has_tls_files(settings):
        raise TlsIdentityExists(
            f"This data directory already has a TLS identity ({directory}); a party keeps the identity "
            "the consortium pinned. `tls show --home DIR` prints its fingerprint.", party=None)
    party = (name or settings.hospital_name).strip()
    if not party:
        raise ConsortiumError("The TLS identity needs a name (--name NAME).")
    try:
        identity = create_identity(directory, party)
    except (SmpcError, OSError) as exc:
        raise ConsortiumError(f"The TLS identity cannot be written to {directory}.", detail=str(exc)) from exc
    logger.info("TLS identity '%s' made in %s", party, directory)
    return TlsIdentityInfo(identity.name, identity.fingerprint, directory / CERT_FILE)


def has_tls_files(settings: Settings) -> bool:
    """Whether `tls_dir` holds a key or a certificate (readable or not): `create` is then refused."""
    return (settings.tls_dir / KEY_FILE).exists() or (settings.tls_dir / CERT_FILE).exists()


def tls_identity(settings: Settings) -> TlsIdentityInfo:
    """This machine's identity; TlsIdentityMissing when `tls create` was never run for it."""
    identity = _load(settings.tls_dir, party=None)
    return TlsIdentityInfo(identity.name, certificate_fingerprint(identity.cert_pem, whose="this machine"),
                           settings.tls_dir / CERT_FILE)


def read_certificate(path: Path, *, whose: str) -> str:
    """The PEM certificate in the file at `path` (a party's tls-cert.pem), checked to be one."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConsortiumError(f"The TLS certificate file '{path}' for {whose} cannot be read.",
                              detail=str(exc)) from exc
    if "PRIVATE KEY" in text:
        raise ConsortiumError(f"The file '{path}' for {whose} holds a private key: send only the certificate "
                              "(tls-cert.pem), never tls-key.pem.")
    certificate_fingerprint(text, whose=f"{whose} ({path})")
    return text


def certificate_fingerprint(cert_pem: str | bytes, *, whose: str) -> str:
    """The fingerprint of a certificate; ConsortiumError naming `whose` when it is not one."""
    try:
        return fingerprint(cert_pem)
    except SmpcError as exc:
        raise ConsortiumError(f"The TLS certificate of {whose} is not a readable X.509 certificate.",
                              detail=exc.detail) from exc


def check_tls_identity(consortium: Consortium, tls_dir: Path, party_name: str) -> str:
    """The fingerprint of this machine's certificate, once it is the one `consortium` pinned for
    `party_name`; TlsIdentityMissing or TlsCertificateMismatch otherwise."""
    party = consortium.pinned_party(party_name)
    identity = _load(Path(tls_dir), party=party_name)
    actual = certificate_fingerprint(identity.cert_pem, whose="this machine")
    expected = certificate_fingerprint(party.tls_cert, whose=f"'{party_name}' in the consortium file")
    if actual != expected:
        raise TlsCertificateMismatch(
            f"This machine's TLS certificate is not the one the consortium pinned for '{party_name}'; use the "
            f"data directory whose `tls create` made the pinned one, or send this certificate "
            f"({Path(tls_dir) / CERT_FILE}) to the admin to pin it.",
            party=party_name, expected=expected, actual=actual)
    return actual


def store_tls(consortium: Consortium, tls_dir: Path, identity: str) -> StoreTls:
    """The TLS material of the model store of `identity` (a hospital id, or COORDINATOR, whose store
    presents the driver's certificate: the coordinator's process is the driver) in a secure
    consortium: this machine's key and certificate, checked to be the pinned ones; every pinned
    certificate, all of which may fetch; and the certificate each store must present."""
    party = SMPC_DRIVER if identity == COORDINATOR else identity
    check_tls_identity(consortium, tls_dir, party)
    parties = consortium.parties()
    fingerprints = {p.name: certificate_fingerprint(p.tls_cert, whose=f"'{p.name}'") for p in parties}
    stores = {m.hospital_id: fingerprints[m.hospital_id] for m in consortium.members if m.hospital_id in fingerprints}
    stores[COORDINATOR] = fingerprints[SMPC_DRIVER]
    from ledger.blobs import StoreTls

    return StoreTls(key_path=Path(tls_dir) / KEY_FILE, cert_path=Path(tls_dir) / CERT_FILE,
                    pinned_pem="".join(p.tls_cert for p in parties), clients=frozenset(fingerprints.values()),
                    stores=stores)


def _load(directory: Path, *, party: str | None) -> TlsIdentity:
    try:
        return load_identity(directory)
    except SmpcError as exc:
        raise TlsIdentityMissing(
            f"This data directory has no TLS identity ({directory}): make one with `tls create --home DIR "
            f"--name NAME` and send its certificate to the consortium's admin"
            + (f" to pin it for '{party}'." if party else "."), party=party, detail=exc.detail) from exc
    except ValueError as exc:  # a certificate file that is not one
        raise TlsIdentityMissing(f"This data directory's TLS certificate ({directory / CERT_FILE}) cannot "
                                 "be read.", party=party, detail=str(exc)) from exc

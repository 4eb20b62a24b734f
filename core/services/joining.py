"""Use cases behind the app's "Join a consortium": this machine's account and (secure consortium)
its TLS identity, a hospital's own data read the way the consortium agreed on, and this site's
record of the consortium's rounds.

Running the node itself is `core.services.deployment.open_node`; what it learns from the chain
lands in this site's SQLite state, which the app reads back through these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from core.data.csv_loader import read_table
from core.data.dataset import DataKind
from core.errors import DataError
from core.federation.consortium import (
    Consortium,
    TlsCertificateMismatch,
    TlsIdentityMissing,
    check_dataset_fits,
)
from core.services.datasets import LoadRequest, source_kind
from core.services.deployment import federation_name
from core.services.tls import TlsIdentityInfo, check_tls_identity, has_tls_files, tls_identity
from core.settings import Settings
from core.state.db import Database
from core.state.queries import FederationView, find_federation
from ledger.identity import own_address


@dataclass(frozen=True)
class DatasetFit:
    """A hospital's dataset that the consortium's model can train on."""

    request: LoadRequest
    name: str
    samples: int
    class_counts: dict[str, int]


def this_account(settings: Settings) -> str | None:
    """This data directory's ledger account, or None when it has none yet (no password needed)."""
    return own_address(settings.keystore_dir)


class TlsStatus(Enum):
    """Where this machine's TLS identity stands with a secure consortium."""

    NONE = "none"  # no identity in this data directory yet: make one
    UNREADABLE = "unreadable"  # files there, but no usable certificate
    UNPINNED = "unpinned"  # an identity, and this machine is not (yet) a hospital of the consortium
    MISMATCH = "mismatch"  # a hospital of the consortium, but another certificate is pinned for it
    PINNED = "pinned"  # the certificate the consortium pinned for this hospital


@dataclass(frozen=True)
class TlsState:
    """This machine's TLS identity as a secure consortium sees it: what the app shows, and whether
    the node may start (only once `status` is PINNED)."""

    status: TlsStatus
    party: str  # the consortium's hospital id for this machine, else the settings' hospital name
    identity: TlsIdentityInfo | None
    message: str

    @property
    def pinned(self) -> bool:
        return self.status is TlsStatus.PINNED


SEND_CERTIFICATE = "send this certificate (not the key) to the consortium admin"


def tls_state(consortium: Consortium, settings: Settings) -> TlsState | None:
    """This machine's TLS identity against `consortium`; None when the consortium is not secure
    (it pins no certificates). The hospital is found by this machine's account in the file, so a
    machine the admin has not added yet is told to send its certificate."""
    if not consortium.secure:
        return None
    account = this_account(settings)
    member = consortium.member(account) if account is not None else None
    party = member.hospital_id if member is not None else settings.hospital_name
    try:
        identity = tls_identity(settings)
    except TlsIdentityMissing as exc:
        if has_tls_files(settings):
            return TlsState(TlsStatus.UNREADABLE, party, None, exc.user_message)
        return TlsState(TlsStatus.NONE, party, None,
                        f"This machine has no TLS identity yet. The consortium '{consortium.name}' is secure: "
                        f"its admin pins each hospital's TLS certificate. Create the identity here, then "
                        f"{SEND_CERTIFICATE}.")
    if member is None:
        return TlsState(TlsStatus.UNPINNED, party, identity,
                        f"Not pinned yet: {SEND_CERTIFICATE}, with this machine's account address, to be "
                        "added as a hospital.")
    try:
        check_tls_identity(consortium, settings.tls_dir, member.hospital_id)
    except TlsCertificateMismatch as exc:
        return TlsState(TlsStatus.MISMATCH, party, identity, exc.user_message)
    return TlsState(TlsStatus.PINNED, party, identity,
                    f"TLS identity pinned by the consortium for hospital '{member.hospital_id}'.")


def request_for_file(consortium: Consortium, path: Path) -> LoadRequest:
    """How to read a file the hospital picked for the consortium. A CSV table is read as the
    consortium agreed: its feature columns, the one other column whose values are the class names
    as the label, every remaining column left out."""
    if source_kind(Path(path)) != "csv":
        return LoadRequest(str(path))
    schema = consortium.input_schema
    if schema.kind is not DataKind.TABLE:
        raise DataError(f"'{Path(path).name}' is a table; the consortium '{consortium.name}' trains on "
                        f"{schema.kind.value} data.", path=str(path))
    table = read_table(Path(path))
    others = [i for i, name in enumerate(table.header) if name not in set(schema.feature_names)]
    classes = set(schema.class_names)
    labels = [i for i in others if classes and {row[i] for row in table.rows if i < len(row)} <= classes]
    if len(labels) != 1:
        names = ", ".join(schema.class_names) or "the class names"
        raise DataError(f"No single column of '{Path(path).name}' holds the consortium's classes ({names}), "
                        "so its label column cannot be told; load it on the Data page and pick the label "
                        "column there.", path=str(path))
    label = table.header[labels[0]]
    return LoadRequest(str(path), label_column=label,
                       drop_columns=tuple(table.header[i] for i in others if i != labels[0]))


def check_fit(consortium: Consortium, request: LoadRequest) -> DatasetFit:
    """Loads the dataset as asked; DataError when the consortium's model cannot train on it."""
    dataset = request.load()
    check_dataset_fits(consortium, dataset)
    dataset.require_trainable()
    return DatasetFit(request, dataset.name, dataset.num_samples, dataset.class_counts())


def consortium_record(db: Database, consortium: Consortium) -> FederationView | None:
    """This site's federation row for the consortium (None before its node first ran)."""
    return find_federation(db, federation_name(consortium))

"""Use cases behind the app's "Join a consortium": this machine's account, a hospital's own data
read the way the consortium agreed on, and this site's record of the consortium's rounds.

Running the node itself is `core.services.deployment.open_node`; what it learns from the chain
lands in this site's SQLite state, which the app reads back through these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.data.csv_loader import read_table
from core.data.dataset import DataKind
from core.errors import DataError
from core.federation.consortium import Consortium, check_dataset_fits
from core.services.datasets import LoadRequest, source_kind
from core.services.deployment import federation_name
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

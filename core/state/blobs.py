"""Content-addressed storage of model weights under the settings' `blob_dir`.

The database records hashes; the weights themselves live in files named by that hash, so the
GUI can restore or export any round's global model after a restart. A file is written to a
temporary name and renamed, and checked against its name when read back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.errors import ModelError, StateError
from core.files import write_atomic
from core.models.weights import Weights, from_bytes, to_bytes, weights_hash

_HASH = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Model weights on disk, one `<sha256>` file per distinct model: the same naming as the
    ledger's blob store, so a model stored by either is found by both."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, model_hash: str) -> Path:
        if not _HASH.match(model_hash):
            raise StateError(f"'{model_hash}' is not a model hash.")
        return self.directory / model_hash

    def __contains__(self, model_hash: str) -> bool:
        return self.path_for(model_hash).is_file()

    def put(self, weights: Sequence[np.ndarray]) -> str:
        """Stores the weights (once per distinct model) and returns their hash."""
        blob = to_bytes(weights)
        model_hash = weights_hash(weights)
        target = self.path_for(model_hash)
        if target.is_file():
            return model_hash
        try:
            write_atomic(target, blob)
        except OSError as exc:
            raise StateError(
                f"The model could not be saved under {self.directory}.", detail=str(exc)
            ) from exc
        return model_hash

    def get(self, model_hash: str) -> Weights:
        """The weights stored under `model_hash`; StateError if missing or not matching it."""
        path = self.path_for(model_hash)
        try:
            weights = from_bytes(path.read_bytes())
        except FileNotFoundError as exc:
            raise StateError(f"The model {model_hash[:12]}… is not stored on this machine.") from exc
        except (OSError, ModelError) as exc:
            raise StateError(f"The stored model file {path} is unreadable.", detail=str(exc)) from exc
        if weights_hash(weights) != model_hash:
            raise StateError(f"The stored model file {path} does not match its hash and may be corrupt.")
        return weights

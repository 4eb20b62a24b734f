"""Content-addressed model blobs under the settings' `blob_dir`: one file per model, named by the
SHA-256 of its bytes.

The database and the chain record only hashes; the bytes live here, so any round's global model
can be restored, exported or served to a peer after a restart. Weights are stored in their
canonical byte form, so a file's name is also the model's `weights_hash`. A file is written to a
temporary name and renamed, and hashed again whenever it is read back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.errors import BlobMismatch, BlobNotFound, ModelError, StateError
from core.files import write_atomic
from core.models.weights import Weights, from_bytes, to_bytes

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_digest(text: str) -> bool:
    """True for a lower-case hex SHA-256, the only names a blob store holds."""
    return bool(_DIGEST.match(text))


def checked_digest(digest: str) -> str:
    """The digest in the store's spelling (lower case, no `0x`); StateError for anything else."""
    normal = digest.lower().removeprefix("0x")
    if not is_digest(normal):
        raise StateError(f"'{digest}' is not a model hash.", detail="a hex SHA-256 digest is expected")
    return normal


class BlobStore:
    """A directory of blobs, each named by the SHA-256 of its content."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / checked_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    __contains__ = has

    def put(self, data: bytes, expected: str | None = None) -> str:
        """Stores `data` (once per distinct content) and returns its digest; refuses it with
        BlobMismatch when it is not the content `expected` names."""
        digest = sha256_hex(data)
        if expected is not None and digest != checked_digest(expected):
            raise BlobMismatch(
                f"The model's bytes hash to {digest[:12]}…, not to {checked_digest(expected)[:12]}…, "
                "the hash recorded for it.",
                expected=checked_digest(expected),
                actual=digest,
            )
        target = self.root / digest
        if target.is_file() and self._digest_of(target) == digest:
            return digest
        try:
            write_atomic(target, data)
        except OSError as exc:
            raise StateError(f"The model could not be saved under {self.root}.", detail=str(exc)) from exc
        return digest

    def get(self, digest: str) -> bytes:
        """The blob's bytes, verified against its name: BlobNotFound if absent, BlobMismatch if
        a byte changed."""
        path = self.path(digest)
        digest = path.name
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(
                f"The model {digest[:12]}… is not stored on this machine.", digest=digest
            ) from exc
        except OSError as exc:
            raise StateError(f"The stored model file {path} is unreadable.", detail=str(exc)) from exc
        actual = sha256_hex(data)
        if actual != digest:
            raise BlobMismatch(
                f"The stored model file {path} was changed on disk: its bytes hash to {actual[:12]}…, "
                f"not to {digest[:12]}…, the hash it is named by.",
                expected=digest,
                actual=actual,
            )
        return data

    def verify(self, digest: str) -> bool:
        """True when the blob is present and intact."""
        try:
            self.get(digest)
        except (BlobNotFound, BlobMismatch):
            return False
        return True

    def put_weights(self, weights: Sequence[np.ndarray]) -> str:
        """Stores model weights in their canonical bytes; returns their hash (`weights_hash`)."""
        return self.put(to_bytes(weights))

    def get_weights(self, digest: str) -> Weights:
        """The model stored under `digest`, verified like `get`."""
        data = self.get(digest)
        try:
            return from_bytes(data)
        except ModelError as exc:
            raise StateError(
                f"The stored model file {self.path(digest)} is not a MedFedChain model.",
                detail=exc.user_message,
            ) from exc

    @staticmethod
    def _digest_of(path: Path) -> str:
        h = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

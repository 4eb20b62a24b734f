"""The federation contract's source and its committed build artifact (ABI + bytecode).

The artifact is what the client deploys, so a running app needs no compiler; `compile_source`
rebuilds it with the pinned Vyper so a test can prove the artifact matches the source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ledger.errors import LedgerError

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
SOURCE_PATH = CONTRACTS_DIR / "federation_ledger.vy"
ARTIFACT_PATH = CONTRACTS_DIR / "federation_ledger.json"
VYPER_VERSION = "0.4.3"


@dataclass(frozen=True)
class Artifact:
    """What deploying and talking to the contract needs."""

    abi: list[dict[str, Any]]
    bytecode: str
    compiler: str
    source_sha256: str


def compile_source(source_path: Path = SOURCE_PATH) -> Artifact:
    """Compiles the Vyper source in-process; requires the pinned compiler version."""
    import hashlib

    import vyper
    from vyper.compiler import compile_code

    if vyper.__version__ != VYPER_VERSION:
        raise LedgerError(
            f"The contract must be built with Vyper {VYPER_VERSION}.", detail=f"found {vyper.__version__}"
        )
    source = source_path.read_text(encoding="utf-8")
    out = compile_code(source, contract_path=source_path.name, output_formats=["abi", "bytecode"])
    return Artifact(
        abi=out["abi"],
        bytecode=out["bytecode"],
        compiler=f"vyper-{VYPER_VERSION}",
        source_sha256=hashlib.sha256(source.encode("utf-8")).hexdigest(),
    )


def write_artifact(artifact: Artifact, path: Path = ARTIFACT_PATH) -> None:
    """Writes the artifact JSON (the build step behind the committed file)."""
    payload = {
        "contractName": "FederationLedger",
        "compiler": artifact.compiler,
        "sourceSha256": artifact.source_sha256,
        "abi": artifact.abi,
        "bytecode": artifact.bytecode,
    }
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")


@lru_cache(maxsize=1)
def load_artifact(path: Path = ARTIFACT_PATH) -> Artifact:
    """Reads the committed artifact the client deploys and calls."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Artifact(
            abi=data["abi"],
            bytecode=data["bytecode"],
            compiler=data["compiler"],
            source_sha256=data["sourceSha256"],
        )
    except (OSError, ValueError, KeyError) as exc:
        raise LedgerError(
            "The ledger contract's build artifact is missing or damaged.", detail=str(exc)
        ) from exc


if __name__ == "__main__":
    write_artifact(compile_source())

"""Unsigned consortium records built from a real dataset (plain, and secure with real TLS
certificates), for tests that need no chain."""

from __future__ import annotations

from typing import Any

from core.data.dataset import Dataset
from core.federation.channel import RoundTiming
from core.federation.consortium import (
    SMPC_DRIVER,
    SMPC_PLAYERS,
    Consortium,
    ContractEntry,
    CoordinatorEntry,
    DriverEntry,
    InputSchema,
    MemberEntry,
    ModelEntry,
    PlayerEntry,
    PolicyEntry,
    SmpcEntry,
    TimingEntry,
    format_version_for,
)
from core.federation.policy import VerificationPolicy
from core.models.architecture import spec_for
from smpc.transport.identity import make_identity

ADMIN = "0x" + "a1" * 20
COORDINATOR = "0x" + "c0" * 20
HOSPITAL = "0x" + "b1" * 20


def sample_consortium(dataset: Dataset, *, admin: str = ADMIN, **overrides: Any) -> Consortium:
    fields: dict[str, Any] = {
        "format_version": format_version_for(secure=overrides.get("smpc") is not None),
        "name": "Test consortium",
        "chain_id": 31337,
        "contract": ContractEntry(address="0x" + "de" * 20, code_hash="ab" * 32),
        "admin": admin,
        "coordinator": CoordinatorEntry(address=COORDINATOR, store_url="http://coordinator:8600"),
        "model": ModelEntry.of(spec_for(dataset)),
        "input_schema": InputSchema.of(dataset),
        "policy": PolicyEntry.of(VerificationPolicy()),
        "timing": TimingEntry.of(RoundTiming(30, 30, 60)),
        "aggregator": "fedavg",
        "members": (MemberEntry(address=HOSPITAL, hospital_id="st-mary", store_url="https://st-mary:8601/"),),
    }
    fields.update(overrides)
    return Consortium(**fields)


def tls_cert(name: str) -> str:
    """A fresh party's certificate, as its `tls create` makes it."""
    return make_identity(name).cert_pem.decode("ascii")


def smpc_section(certs: dict[str, str] | None = None) -> SmpcEntry:
    """Three players on their own hosts and a driver, each with its own certificate."""
    certs = certs or {}
    players = [PlayerEntry(name=name, address=f"{name}.example.org:{4440 + i}",
                           tls_cert=certs.get(name) or tls_cert(name)) for i, name in enumerate(SMPC_PLAYERS)]
    driver = DriverEntry(tls_cert=certs.get(SMPC_DRIVER) or tls_cert(SMPC_DRIVER))
    return SmpcEntry(players=tuple(players), driver=driver)


def secure_sample(dataset: Dataset, *, admin: str = ADMIN, certs: dict[str, str] | None = None,
                  **overrides: Any) -> Consortium:
    """The sample consortium, secure: its SMPC parties and its hospital pinned to certificates."""
    certs = certs or {}
    member = MemberEntry(address=HOSPITAL, hospital_id="st-mary", store_url="https://st-mary:8601",
                         tls_cert=certs.get("st-mary") or tls_cert("st-mary"))
    fields: dict[str, Any] = {"smpc": smpc_section(certs), "members": (member,),
                              "coordinator": CoordinatorEntry(address=COORDINATOR, store_url="https://coordinator:8600")}
    fields.update(overrides)
    return sample_consortium(dataset, admin=admin, **fields)

"""An unsigned consortium record built from a real dataset, for tests that need no chain."""

from __future__ import annotations

from typing import Any

from core.data.dataset import Dataset
from core.federation.channel import RoundTiming
from core.federation.consortium import (
    FORMAT_VERSION,
    Consortium,
    ContractEntry,
    CoordinatorEntry,
    InputSchema,
    MemberEntry,
    ModelEntry,
    PolicyEntry,
    TimingEntry,
)
from core.federation.policy import VerificationPolicy
from core.models.architecture import spec_for

ADMIN = "0x" + "a1" * 20
COORDINATOR = "0x" + "c0" * 20
HOSPITAL = "0x" + "b1" * 20


def sample_consortium(dataset: Dataset, *, admin: str = ADMIN, **overrides: Any) -> Consortium:
    fields: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
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

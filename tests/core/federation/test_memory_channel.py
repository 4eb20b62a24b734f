"""The channel contract suite over the in-memory channel."""

from __future__ import annotations

import pytest

from core.federation.channel import RoundChannel
from core.federation.memory_channel import BlobRefused, InMemoryLedger
from tests.core.federation.channel_suite import ChannelContract


class MemoryHarness:
    def __init__(self) -> None:
        self.ledger = InMemoryLedger()

    def register(self, hospital_ids: list[str]) -> None:
        for hid in hospital_ids:
            self.ledger.register(hid)

    def deregister(self, hospital_id: str) -> None:
        self.ledger.deregister(hospital_id)

    def channel(self, identity: str) -> RoundChannel:
        return self.ledger.channel(identity)

    def advance(self, seconds: float) -> None:
        self.ledger.advance(seconds)


class TestInMemoryChannel(ChannelContract):
    @pytest.fixture
    def harness(self) -> MemoryHarness:
        return MemoryHarness()


def test_a_tampered_blob_is_refused() -> None:
    harness = MemoryHarness()
    digest = harness.channel("h1").put_blob(b"honest")
    harness.ledger.tamper_blob("h1", digest, b"evil")
    with pytest.raises(BlobRefused):
        harness.channel("h2").get_blob(digest, owner="h1")

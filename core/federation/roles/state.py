"""Where a role keeps what it must remember across a restart: its event cursor and its own
ballots (the scores behind its votes). The chain holds everything else, and is read first."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class RoleState(ABC):
    """A small JSON document per role, saved whole and atomically after each step."""

    @abstractmethod
    def load(self) -> dict[str, Any]: ...

    @abstractmethod
    def save(self, document: dict[str, Any]) -> None: ...


class MemoryRoleState(RoleState):
    def __init__(self) -> None:
        self._document: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        return _copy(self._document)

    def save(self, document: dict[str, Any]) -> None:
        self._document = _copy(document)


def _copy(document: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(document))

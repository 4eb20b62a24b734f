"""`SqliteRoleState`: a role's cursor and ballots in the local database, one row per role."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.federation.roles.state import RoleState
from core.state.db import Database
from core.state.models import RoleStateRecord


class SqliteRoleState(RoleState):
    def __init__(self, database: Database, federation_id: int, role: str) -> None:
        self.database = database
        self.federation_id = federation_id
        self.role = role

    def load(self) -> dict[str, Any]:
        with self.database.session(read_only=True) as session:
            record = session.get(RoleStateRecord, (self.federation_id, self.role))
            return dict(record.document) if record is not None else {}

    def save(self, document: dict[str, Any]) -> None:
        with self.database.session() as session:
            record = session.get(RoleStateRecord, (self.federation_id, self.role))
            if record is None:
                session.add(RoleStateRecord(federation_id=self.federation_id, role=self.role, document=document))
            else:
                record.document = dict(document)


def role_names(database: Database, federation_id: int, prefix: str) -> list[str]:
    """The roles of a federation whose state is kept here, by name prefix ("node" finds the
    node of a deployment site and every "node:<hospital>" of a simulation)."""
    with database.session(read_only=True) as session:
        names = session.scalars(select(RoleStateRecord.role).where(RoleStateRecord.federation_id == federation_id))
        return sorted(n for n in names if n == prefix or n.startswith(prefix + ":"))

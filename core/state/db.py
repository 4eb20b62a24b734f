"""Opening the local SQLite database: engine pragmas, schema migrations, units of work.

`open_database` is the only way in. It turns every way a file can be unusable (not a database,
corrupt, written by a newer MedFedChain, locked) into a `StateError` a hospital's IT person can
act on, and brings an older schema up to date with the Alembic migrations shipped beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from core.errors import StateError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 10_000
_READ_ONLY = "medfed_read_only"


def alembic_config(connection: Any | None = None) -> Config:
    """The Alembic configuration, built in code (no alembic.ini); `connection` is handed to env.py."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _install_pragmas(engine: Engine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin, so that DDL is
        # transactional too and the pragmas below run outside any transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StateError("The local database cannot use write-ahead logging.", detail=str(mode))
            # With WAL, NORMAL is durable across application crashes, only not across power loss.
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A unit of work reads, then writes: taking the write lock up front makes a concurrent
        # writer wait (busy timeout) instead of failing at once with a stale read snapshot.
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _make_engine(path: Path, *, foreign_keys: bool, migration: bool = False) -> Engine:
    engine = create_engine(
        f"sqlite+pysqlite:///{path}",
        poolclass=NullPool if migration else None,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
    )
    _install_pragmas(engine, foreign_keys=foreign_keys)
    return engine


def _unusable(path: Path, exc: BaseException) -> StateError:
    text = str(exc).lower()
    if "not a database" in text or "malformed" in text or "disk image" in text:
        return StateError(
            f"The local database {path} is corrupt or is not a MedFedChain database. "
            "Move it aside (or restore a backup) and start again.",
            detail=str(exc),
        )
    if "locked" in text or "busy" in text:
        return StateError(
            f"The local database {path} is locked by another program; close it and try again.",
            detail=str(exc),
        )
    return StateError(f"The local database {path} cannot be opened.", detail=str(exc))


def _migrate(path: Path) -> None:
    """Brings the schema to head in one transaction, with foreign keys off as SQLite's table
    rebuilds require, and refuses schemas this version does not know."""
    engine = _make_engine(path, foreign_keys=False, migration=True)
    try:
        with engine.connect() as connection:
            with connection.begin():
                script = ScriptDirectory.from_config(alembic_config())
                heads = MigrationContext.configure(connection).get_current_heads()
                known = {rev.revision for rev in script.walk_revisions()}
                unknown = [h for h in heads if h not in known]
                if unknown:
                    raise StateError(
                        f"The local database {path} was written by a newer version of MedFedChain "
                        "(unknown schema revision). Update MedFedChain to open it.",
                        detail=", ".join(unknown),
                    )
                if not heads:
                    tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
                    if tables:
                        raise StateError(
                            f"The file {path} is an SQLite database of another program, not a "
                            "MedFedChain database.",
                            detail=", ".join(sorted(tables)),
                        )
                if set(heads) != set(script.get_heads()):
                    logger.info("Migrating %s from %s to %s", path, heads or "empty", script.get_heads())
                    command.upgrade(alembic_config(connection), "head")
                violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if violations:
                    raise StateError(
                        f"Migrating the local database {path} would break its references; nothing "
                        "was changed.",
                        detail=repr(violations[:5]),
                    )
    except StateError:
        raise
    except CommandError as exc:
        raise StateError(f"The local database {path} could not be migrated.", detail=str(exc)) from exc
    except DatabaseError as exc:
        raise _unusable(path, exc) from exc
    finally:
        engine.dispose()


class Database:
    """An open local database; `session()` is one unit of work (commit on success, else rollback)."""

    def __init__(self, path: Path, engine: Engine) -> None:
        self.path = path
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._readers = sessionmaker(engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False)

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Session]:
        """One unit of work: everything inside commits together or not at all.

        Database errors become `StateError`; any other exception rolls back and propagates.
        Objects read inside stay usable afterwards (no expiry on commit) but are detached.
        `read_only` sessions see one consistent snapshot and never wait for writers.
        """
        session = (self._readers if read_only else self._sessions)()
        try:
            yield session
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            raise StateError(
                "The local database refused a change that would make it inconsistent.", detail=str(exc)
            ) from exc
        except DatabaseError as exc:
            session.rollback()
            raise _unusable(self.path, exc) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"


def open_database(path: Path) -> Database:
    """Opens (creating if needed) the database at `path` and migrates it to the current schema."""
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_file():
        raise StateError(f"The local database path {path} is not a file.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"The folder of the local database {path} cannot be created.", detail=str(exc)
        ) from exc
    _migrate(path)
    engine = _make_engine(path, foreign_keys=True)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar_one()
    except DatabaseError as exc:
        engine.dispose()
        raise _unusable(path, exc) from exc
    logger.debug("Opened local database %s", path)
    return Database(path, engine)

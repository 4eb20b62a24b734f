"""Opening the local database: migrations, pragmas, units of work and unusable files."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, select

from core.errors import StateError
from core.state.db import Database, alembic_config, open_database
from core.state.models import Base, Dataset, Hospital
from core.state.queries import list_datasets


def test_migrations_to_head_on_empty_file_match_the_models(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    assert not path.exists()

    db = open_database(path)

    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert context.get_current_heads() == tuple(ScriptDirectory.from_config(alembic_config()).get_heads())
        assert compare_metadata(context, Base.metadata) == []
    db.close()


def test_every_model_table_is_created(db: Database) -> None:
    with db.engine.connect() as connection:
        tables = {
            row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_wal_foreign_keys_and_busy_timeout_are_on(db: Database) -> None:
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (connection.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with open_database(path) as db:
        with db.session() as session:
            session.add(Hospital(id="h1", name="St. Anna"))

    with open_database(path) as db:
        with db.session() as session:
            assert session.get_one(Hospital, "h1").name == "St. Anna"


def test_session_rolls_back_everything_when_the_unit_of_work_fails(db: Database) -> None:
    with pytest.raises(RuntimeError, match="crash"):
        with db.session() as session:
            session.add(Hospital(id="h1", name="St. Anna"))
            session.flush()  # the row reached SQLite inside the transaction
            raise RuntimeError("crash")

    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Hospital)) == 0


def test_constraint_violation_becomes_state_error_and_rolls_back(db: Database) -> None:
    with pytest.raises(StateError, match="inconsistent"):
        with db.session() as session:
            session.add(Hospital(id="h1", name="St. Anna"))
            session.add(Dataset(name="d", source="x", kind="table", samples=1, classes=[], input_shape=[3]))
            session.add(Dataset(name="d", source="x", kind="table", samples=1, classes=[], input_shape=[3]))

    with db.session() as session:
        assert session.get(Hospital, "h1") is None


def test_foreign_keys_are_enforced(db: Database) -> None:
    from core.state.models import FederationMember

    with pytest.raises(StateError):
        with db.session() as session:
            session.add(FederationMember(federation_id=999, hospital_id="nobody"))


def test_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"these are patient notes, not a database\n" * 200)

    with pytest.raises(StateError, match="corrupt or is not a MedFedChain database") as info:
        open_database(path)
    assert str(path) in info.value.user_message


def test_truncated_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_database(path).close()
    header = path.read_bytes()[:100]
    path.write_bytes(header + b"\x00" * 50)  # valid header, pages gone

    with pytest.raises(StateError):
        open_database(path)


def test_database_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_database(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")

    with pytest.raises(StateError, match="newer version of MedFedChain"):
        open_database(path)


def test_another_programs_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")

    with pytest.raises(StateError, match="another program"):
        open_database(path)

    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"invoices"}


def test_directory_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not a file"):
        open_database(tmp_path)


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    open_database(path).close()
    assert path.is_file()


def test_concurrent_read_then_write_units_of_work_wait_instead_of_failing(tmp_path: Path) -> None:
    # The GUI records a training run while a worker records a federation: two writers at once,
    # each unit of work reading before it writes, in separate connections.
    path = tmp_path / "state.db"
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(prefix: str) -> None:
        try:
            with open_database(path) as db:
                barrier.wait()
                for i in range(40):
                    with db.session() as session:
                        existing = session.scalar(select(func.count()).select_from(Hospital))
                        session.add(Hospital(id=f"{prefix}{i}", name=f"{prefix} {existing}"))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    open_database(path).close()
    threads = [threading.Thread(target=writer, args=(p,)) for p in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    with open_database(path) as db:
        with db.session(read_only=True) as session:
            assert session.scalar(select(func.count()).select_from(Hospital)) == 80


def test_initial_revision_downgrades_to_an_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = open_database(path)

    with db.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
        tables = {
            row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")
        }
    db.close()

    assert tables == {"alembic_version"}
    open_database(path).close()  # and upgrades again on the next open


def test_a_database_of_the_first_schema_is_upgraded_keeping_its_rows(tmp_path: Path) -> None:
    import sqlite3

    from alembic import command

    from core.state.db import alembic_config

    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001_initial")
        connection.exec_driver_sql(
            "insert into datasets (name, kind, source, samples, classes, class_counts, input_shape, loaded_at) "
            "values (?, 'table', 'heart.csv', 10, ?, '{}', '[3]', '2026-01-01 00:00:00')",
            ("heart", '["a", "b"]'),
        )
    engine.dispose()

    db = open_database(path)
    (view,) = list_datasets(db)
    assert view.name == "heart" and view.load_options == {}
    db.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("select version_num from alembic_version").fetchone()[0] == "0003_role_states"

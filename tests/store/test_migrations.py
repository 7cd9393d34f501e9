"""Migrations apply at start, on SQLite (in WAL mode) and on PostgreSQL, also concurrently."""

from __future__ import annotations

import threading

from sqlalchemy import inspect, text

from claude_batch_server.store import migrate
from claude_batch_server.store.db import Database

TABLES = {"alembic_version", "audit_events", "login_throttles", "revoked_tokens"}


def test_upgrade_creates_the_schema_once(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrate.upgrade(database)
        migrate.upgrade(database)  # a second start changes nothing
        assert set(inspect(database.engine).get_table_names()) >= TABLES
        with database.engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert len(versions) == 1
    finally:
        database.close()


def test_concurrent_starts_migrate_once(database_url: str) -> None:
    databases = [Database(database_url) for _ in range(3)]
    errors: list[BaseException] = []

    def start(database: Database) -> None:
        try:
            migrate.upgrade(database)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        # SQLite serialises the writers; PostgreSQL takes an advisory lock.
        assert errors == []
        assert set(inspect(databases[0].engine).get_table_names()) >= TABLES
    finally:
        for database in databases:
            database.close()


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with database.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        database.close()

"""Migrations apply at start, on SQLite (in WAL mode) and on PostgreSQL, also concurrently."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, delete, func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from claude_batch_server.jobs.reading import LISTED
from claude_batch_server.store import migrate
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JOB_VERSIONS, JOBS, Base, Job, JobEvent, Repository

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


def _migrate(database: Database, revision: str, *, down: bool = False) -> None:
    config = migrate.alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def _rows_of_0003(connection: Connection) -> None:
    """Two users' repositories and a job with an event, as the server of 0003 kept them."""
    tables = MetaData()
    tables.reflect(connection, only=["repositories", "jobs", "job_events"])
    now = datetime.now(UTC)
    connection.execute(
        tables.tables["repositories"].insert(),
        [
            {
                "name": name,
                "git_url": f"/home/{owner}/src",
                "description": "",
                "status": "ready",
                "commit": "c" * 40,
                "registered_by": owner,
                "registered_at": now,
            }
            for name, owner in (("shop", "alice"), ("tools", "bob"))
        ],
    )
    connection.execute(
        tables.tables["jobs"].insert(),
        {
            **{column: 0 for column in ("runs", "num_turns", "input_tokens", "output_tokens")},
            "id": "a" * 32,
            "user": "carol",  # an admin's job on alice's repository
            "repository": "shop",
            "prompt": "p",
            "run_prompt": "p",
            "options": {},
            "images": [],
            "expected_images": [],
            "status": "completed",
            "created_at": now,
            "cancel_requested": False,
            "cost_usd": 0.0,
            "commit": "c" * 40,
            "workspace_removed": False,
        },
    )
    connection.execute(
        tables.tables["job_events"].insert(),
        {"job_id": "a" * 32, "seq": 1, "time": now, "type": "stdout", "data": "{}"},
    )


def _upgraded_from_0003(database: Database) -> None:
    """The schema of 0003 with its rows (`_rows_of_0003`), then upgraded to the last."""
    _migrate(database, "0003")
    with database.engine.begin() as connection:
        _rows_of_0003(connection)
    migrate.upgrade(database)


def test_repository_owners_keep_what_0003_held(database_url: str) -> None:
    """0004: existing repositories keep their name as their id (what DATA_DIR files their
    trees under), their owner is who registered them, and jobs keep finding them."""
    database = Database(database_url)
    try:
        _upgraded_from_0003(database)

        with database.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []  # the migrated schema is the one tables.py declares
        with database.read() as session:
            repos = {r.id: (r.name, r.registered_by) for r in session.scalars(select(Repository))}
            job = session.get(Job, "a" * 32)
            events = session.scalar(select(func.count()).select_from(JobEvent))
        assert repos == {"shop": ("shop", "alice"), "tools": ("tools", "bob")}
        assert job is not None and (job.repository, job.repository_id) == ("shop", "shop")
        assert events == 1

        now = datetime.now(UTC)
        with database.session() as session:  # names are per owner now
            session.add(
                Repository(
                    id="b" * 32,
                    name="shop",
                    git_url="/x",
                    registered_by="bob",
                    status="ready",
                    registered_at=now,
                )
            )
        with pytest.raises(IntegrityError), database.session() as session:
            session.add(
                Repository(
                    id="c" * 32,
                    name="shop",
                    git_url="/x",
                    registered_by="bob",
                    status="ready",
                    registered_at=now,
                )
            )
        with database.session() as session:
            session.execute(delete(Repository).where(Repository.id == "b" * 32))

        _migrate(database, "0003", down=True)  # and back, where no two owners share a name
        _migrate(database, "head")
        with database.read() as session:
            assert session.get(Job, "a" * 32).repository_id == "shop"  # type: ignore[union-attr]
            assert session.scalar(select(func.count()).select_from(JobEvent)) == 1
            assert session.get(Repository, "tools").registered_by == "bob"  # type: ignore[union-attr]
    finally:
        database.close()


def test_every_change_to_a_users_jobs_is_counted(database_url: str) -> None:
    """0010: triggers count each insert, update and delete of a user's jobs, whatever
    statement makes it, and only that user's count (api/listings.py relies on it)."""
    database = Database(database_url)

    def counts() -> dict[str, int]:
        with database.engine.connect() as connection:
            rows = connection.execute(text('SELECT "user", version FROM job_versions')).all()
        return {user: version for user, version in rows}

    try:
        _upgraded_from_0003(database)  # carol's job, from before the count
        assert counts() == {}
        with database.engine.begin() as connection:
            connection.execute(text("UPDATE jobs SET prompt = 'q' WHERE \"user\" = 'carol'"))
        assert counts() == {"carol": 1}
        with database.engine.begin() as connection:
            job = connection.execute(select(Job.__table__).limit(1)).mappings().one()
            for n, user in enumerate(("carol", "dave")):
                connection.execute(Job.__table__.insert(), {**job, "id": f"{n}" * 32, "user": user})
        assert counts() == {"carol": 2, "dave": 1}
        with database.engine.begin() as connection:
            connection.execute(text("DELETE FROM jobs WHERE \"user\" = 'carol'"))  # two rows
        assert counts() == {"carol": 4, "dave": 1}
        with database.engine.begin() as connection:
            connection.execute(text("UPDATE jobs SET status = 'failed'"))
            connection.rollback()  # counted with the change, so undone with it
        assert counts() == {"carol": 4, "dave": 1}
    finally:
        database.close()


def test_an_update_of_each_listed_column_is_counted_and_a_lease_renewal_is_not(
    database_url: str,
) -> None:
    """The triggers of 0010 name the columns a listing shows: one added to LISTED without
    a migration that names it too would leave kept listing pages stale."""
    database = Database(database_url)
    try:
        _upgraded_from_0003(database)
        job = JOBS.c.id == "a" * 32
        with database.engine.begin() as connection:
            connection.execute(update(JOBS).where(job).values(lease_expires=datetime.now(UTC)))
        versions = select(JOB_VERSIONS.c.version).where(JOB_VERSIONS.c.user == "carol")
        for count, column in enumerate(LISTED, start=1):
            with database.engine.begin() as connection:
                # set to what it holds: a trigger "of" a column fires when it is set
                connection.execute(update(JOBS).where(job).values({column.key: column}))
                assert connection.execute(versions).scalar() == count, column.key
    finally:
        database.close()

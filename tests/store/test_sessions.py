"""Read sessions beside writers, and work that waits for its transaction to commit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from claude_batch_server.audit import Auditor
from claude_batch_server.errors import Conflict
from claude_batch_server.store import db, migrate
from claude_batch_server.store.db import Database, after_commit
from claude_batch_server.store.tables import AuditEvent, RevokedToken, utcnow
from tests.support.postgres import PostgresCluster

QUICK = 1.0  # seconds; far below the busy timeout a blocked session would wait


@pytest.fixture
def database(database_url: str) -> Database:
    database = Database(database_url)
    migrate.upgrade(database)
    return database


def revoked(count: int) -> list[RevokedToken]:
    return [RevokedToken(jti=f"t{n}", expires_at=utcnow()) for n in range(count)]


def test_a_read_neither_waits_for_nor_blocks_a_writer(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'x.db'}")
    migrate.upgrade(database)
    with database.session() as session:
        session.add_all(revoked(1))
    writing, written = threading.Event(), threading.Event()

    def writer() -> None:
        with database.session() as session:
            session.add_all(revoked(2)[1:])
            session.flush()  # holds SQLite's write lock from here to the commit
            writing.set()
            assert written.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(10)
        started = time.monotonic()
        with database.read() as reading:
            assert reading.scalar(select(func.count()).select_from(RevokedToken)) == 1
            written.set()
            thread.join(10)  # the writer commits while this read is open
            assert not thread.is_alive()
        assert time.monotonic() - started < QUICK
    finally:
        written.set()
        thread.join()
        database.close()
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(RevokedToken)) == 2


@pytest.mark.parametrize("unit", ["session", "connection"])
def test_commit_hooks_run_only_after_a_commit(database: Database, unit: str) -> None:
    ran: list[str] = []
    begin = getattr(database, unit)
    with begin() as transaction:
        after_commit(transaction, lambda: ran.append("committed"))
        assert ran == []
    with pytest.raises(RuntimeError), begin() as transaction:
        after_commit(transaction, lambda: ran.append("rolled back"))
        raise RuntimeError
    with begin() as transaction:  # a pooled connection carries no hook of an earlier one
        pass
    assert ran == ["committed"]
    database.close()


def test_an_audit_row_in_the_actions_transaction(database: Database) -> None:
    counted: list[tuple[str, str]] = []
    auditor = Auditor(database, lambda action, outcome: counted.append((action, outcome)))
    with (
        auditor.around(user="u", address="a", action="done", target="t") as audit,
        database.session() as session,
    ):
        audit.record_in(session)
    with (
        pytest.raises(Conflict),
        auditor.around(user="u", address="a", action="refused", target="t") as audit,
        database.session() as session,
    ):
        audit.record_in(session)
        raise Conflict("no")  # rolls the success row back
    with database.read() as session:
        rows = session.execute(select(AuditEvent.action, AuditEvent.outcome)).all()
    assert sorted(rows) == [("done", "success"), ("refused", "conflict")]
    assert counted == [("done", "success"), ("refused", "conflict")]
    database.close()


@pytest.mark.postgres
def test_a_connection_idle_for_a_while_is_checked_before_use(
    postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database(postgres.create_database())
    try:
        monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)  # every connection counts as idle
        assert _select_one(database) == 1
        postgres.cut_connections(database.url)
        assert _select_one(database) == 1  # the dead one was found and replaced

        monkeypatch.setattr(db, "PING_AFTER_IDLE", 3600.0)  # none counts as idle
        postgres.cut_connections(database.url)
        with pytest.raises(OperationalError):  # the price of not asking: one failure...
            _select_one(database)
        assert _select_one(database) == 1  # ...after which the pool starts afresh
    finally:
        database.close()


@pytest.mark.postgres
def test_a_write_on_a_cut_connection_fails_as_the_database_said(
    postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OperationalError, which writers retry (the transcript's recorder), not an error of
    SQLAlchemy's about the invalidated connection."""
    database = Database(postgres.create_database())
    try:
        monkeypatch.setattr(db, "PING_AFTER_IDLE", 3600.0)  # none counts as idle
        with database.connection() as connection:
            connection.execute(text("SELECT 1"))
        postgres.cut_connections(database.url)
        with pytest.raises(OperationalError), database.connection() as connection:
            connection.execute(text("SELECT 1"))
        with database.connection() as connection:
            assert connection.scalar(text("SELECT 1")) == 1
    finally:
        database.close()


def test_a_streamed_read_fetches_a_few_rows_at_a_time(database: Database) -> None:
    """yield_per: on PostgreSQL a server-side cursor, which needs a transaction."""
    with database.session() as session:
        session.add_all(revoked(5))
    query = select(RevokedToken.jti).order_by(RevokedToken.jti).execution_options(yield_per=2)
    with database.read(streamed=True) as session:
        assert list(session.scalars(query)) == [f"t{n}" for n in range(5)]
    database.close()


def _select_one(database: Database) -> int | None:
    with database.read_connection() as connection:
        value: int | None = connection.scalar(text("SELECT 1"))
        return value

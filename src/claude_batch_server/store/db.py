"""The engine and session factories, for SQLite (WAL) and PostgreSQL alike."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 10_000
READS_ONLY = "cbs_reads_only"  # execution option of the read sessions' connections
_COMMIT_HOOKS = "cbs_after_commit"  # key in Session.info and Connection.info
_CHECKED_IN = "cbs_checked_in"  # key in a pooled connection's info: when it came back
PING_AFTER_IDLE = 1.0  # seconds


def engine_for(url: str) -> Engine:
    """An engine for `url`; `postgresql://` is served by psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed.database)
    engine = create_engine(parsed, pool_size=10, max_overflow=20)
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", functools.partial(_ping_if_idle, engine.dialect))
    return engine


def _note_checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_CHECKED_IN] = time.monotonic()


def _ping_if_idle(
    dialect: Dialect, dbapi_connection: Any, record: ConnectionPoolEntry, _: Any
) -> None:
    """SQLAlchemy's pre-ping, but only for a connection that sat idle for a while: a busy
    server checks connections out all the time, and a round trip each costs more than the
    statements of a short read. Should the database restart meanwhile, the one statement
    that meets a dead connection fails, and the pool drops all it holds."""
    if time.monotonic() - record.info.get(_CHECKED_IN, 0.0) < PING_AFTER_IDLE:
        return
    try:
        dialect.do_ping(dbapi_connection)
    except Exception as error:  # the driver's own errors: gone, or broken
        raise DisconnectionError(str(error)) from error


def _sqlite_engine(database: str | None) -> Engine:
    if database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{database}", connect_args={"check_same_thread": False, "timeout": 10}
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _use_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _use_wal(cursor: Any) -> None:
    """WAL is kept in the database file, so only the first connection switches it. The switch
    takes an exclusive lock, and SQLite answers a contended one at once, without its busy
    handler: several processes starting together retry, for as long as the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        with contextlib.suppress(sqlite3.OperationalError):  # "database is locked"
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            if cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
                return
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("could not switch the database to WAL mode")
        time.sleep(0.01)


def _sqlite_begin(connection: Connection) -> None:
    """pysqlite's own transaction handling is off (isolation_level=None), so we begin
    writers with `BEGIN IMMEDIATE`, which takes the write lock and so serialises them (the
    queue's claim relies on it). Readers begin nothing: each statement is a snapshot of its
    own, as PostgreSQL's reads in autocommit, and in WAL mode it neither waits for a writer
    nor holds one up. Straight to the driver: SQLAlchemy's execution costs more than this."""
    if not connection.get_execution_options().get(READS_ONLY, False):
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


def after_commit(unit: Session | Connection, hook: Callable[[], None]) -> None:
    """Runs `hook` once the transaction of `unit` (a `Database.session` or `connection`)
    has committed; never if it rolls back."""
    unit.info.setdefault(_COMMIT_HOOKS, []).append(hook)


def _run_commit_hooks(session: Session) -> None:
    for hook in session.info.pop(_COMMIT_HOOKS, ()):
        hook()


class Database:
    """The engine plus session factories; one per server process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_for(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "after_commit", _run_commit_hooks)
        # PostgreSQL reads run in autocommit: no BEGIN and COMMIT round trips around them
        reads: dict[str, Any] = {READS_ONLY: True}
        if not self.is_sqlite:
            reads["isolation_level"] = "AUTOCOMMIT"
        self._read_engine = self.engine.execution_options(**reads)
        self._reads = sessionmaker(self._read_engine, expire_on_commit=False)
        # a read that fetches its rows a few at a time (yield_per) needs a transaction on
        # PostgreSQL, where they come from a server-side cursor
        streamed = self.engine.execution_options(**{READS_ONLY: True})
        self._streamed_reads = sessionmaker(streamed, expire_on_commit=False)
        # SQLite: this process's writers queue here, where a release wakes the next one at
        # once; SQLite's busy handler would poll in sleeps of up to 100 ms. Reentrant, so a
        # thread that nests sessions meets SQLite's busy timeout, as without it.
        self._writers = threading.RLock() if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any error."""
        with self._writer_turn(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self, streamed: bool = False) -> Iterator[Session]:
        """A unit of work that only reads: on SQLite it does not take the write lock, so it
        neither waits for writers nor makes them wait; on PostgreSQL each statement sees
        what was committed when it ran. `streamed`: for a query that fetches its rows a few
        at a time (`yield_per`). Never write in it."""
        factory = self._streamed_reads if streamed else self._reads
        with factory() as session, session.begin():
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """`session` without the ORM, for the hot paths where its bookkeeping costs more
        than the statements: one transaction, committed on success, rolled back on any
        error."""
        hooks: list[Callable[[], None]] = []
        with self._writer_turn():
            with self.engine.begin() as connection:
                connection.info[_COMMIT_HOOKS] = hooks
                try:
                    yield connection
                finally:  # taken off whatever happens: the pooled connection lives on
                    # (unless the database cut it: then it is gone, and asking for its
                    # info would hide the error behind one of SQLAlchemy's)
                    if not connection.invalidated:
                        del connection.info[_COMMIT_HOOKS]
            for hook in hooks:  # committed
                hook()

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """`read` without the ORM. Never write in it."""
        with self._read_engine.begin() as connection:
            yield connection

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        if self._writers is None:
            yield
            return
        # after SQLite's own timeout, go on anyway and let SQLite decide
        held = self._writers.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            yield
        finally:
            if held:
                self._writers.release()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()

"""Writes a running job's transcript: its events in the order they arrive, as many per
transaction as have queued up.

The run's first transaction (its process, the start mark) is written as soon as the first
line comes, or after FIRST_WAIT without one, and holds it. A later line is written at once
if the last transaction is LINGER old, else when it is, with those that came meanwhile
(or the run's end): a chatty agent costs a transaction per LINGER at most, and a line after
a quiet spell reaches its followers without waiting. Lines that come faster than the
database takes them share one anyway. The last transaction holds the run's end. The
Claude Code session id, once known, is stored with the events that revealed it. The
recorder is the run's only writer of its transcript: knowing the last sequence number, it
stores each batch in one INSERT.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.transcript import Event
from claude_batch_server.jobs.transitions import Transitions
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JobEvent

Marks = Callable[[Connection], Sequence[Event]]  # work in a transaction, and its events
# the run's start, with the session id if known by then, and the events to put first
First = Callable[[Connection, str | None], Sequence[Event]]
FIRST_WAIT = 0.05  # seconds the first transaction waits for lines to take along
LINGER = 0.01  # seconds from one transaction to the next, at least (the run's end aside)
BACKLOG = 1000  # events waiting to be written before those who add more have to wait
BACKLOG_BYTES = 16 * 1024 * 1024  # or bytes of them
# a write that fails for want of space (or a moment's outage) is tried again meanwhile:
# the disk guard frees room for the database within a tick (see disk.py)
WRITE_TRIES = 10
WRITE_PAUSE = 0.5  # seconds


@dataclass
class OutputBudget:
    """Bytes of transcript a job may still keep (JOB_OUTPUT_MAX_MB less what earlier runs
    kept); `exceeded` is called once, when an event does not fit."""

    left: int
    exceeded: Callable[[], None]
    spent: bool = False

    def take(self, size: int) -> bool:
        if not self.spent and size > self.left:
            self.spent = True
            self.exceeded()
        if self.spent:
            return False
        self.left -= size
        return True


class TranscriptRecorder:
    def __init__(
        self,
        database: Database,
        events: EventStore,
        broker: Broker,
        job_id: str,
        first: First,
        on_failure: Callable[[], None],
        budget: OutputBudget,
        last_seq: int | None = None,
    ) -> None:
        """`last_seq`: the number of the transcript's last event, if the caller knows it.
        Events past the `budget` are not kept."""
        self._database = database
        self._on_failure = on_failure
        self._first: First | None = first
        self._events = events
        self._broker = broker
        self._job_id = job_id
        self._seq = last_seq  # the last stored event's, known once the first batch is in
        self._pending: list[Event] = []
        self._pending_bytes = 0
        self._budget = budget
        self._session_id: str | None = None
        self._stored_session_id: str | None = None
        self._wake = asyncio.Event()
        self._taken = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._last: Marks | None = None
        self._written = float("-inf")  # when the last transaction was stored (loop time)
        self._writer = asyncio.create_task(self._write_loop(), name=f"transcript-{job_id}")

    @property
    def started(self) -> bool:
        """Whether the first transaction is stored."""
        return self._first is None

    async def add(self, event: Event, session_id: str | None = None) -> None:
        if self._writer.done():  # it failed, and the run is being stopped: hold nothing
            return
        if not self._budget.take(len(event.data)):  # past the limit: the run is stopped
            return
        self._pending.append(event)
        self._pending_bytes += len(event.data)
        self._session_id = session_id or self._session_id
        self._wake.set()
        while self._backlogged() and not self._writer.done():
            self._taken.clear()
            await self._taken.wait()  # the agent's output waits in its pipe meanwhile

    def _backlogged(self) -> bool:
        return len(self._pending) >= BACKLOG or self._pending_bytes >= BACKLOG_BYTES

    async def close(self, last: Marks | None = None) -> None:
        """Returns once everything added is stored, with `last` in the final transaction
        (its events after all others)."""
        self._last = last
        self._closing = True
        self._closed.set()
        self._wake.set()
        await self._writer

    async def _write_loop(self) -> None:
        try:
            await self._write_all()
        except Exception:
            self._on_failure()  # a run whose transcript cannot be kept is stopped
            raise

    async def _write_all(self) -> None:
        # the first transaction waits a moment for the first lines, to hold them too
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), FIRST_WAIT)
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (self._pending or self._first is not None) and not self._closing:
                if self._first is None and not self._backlogged():
                    await self._linger()
                    if self._closing:
                        break
                await self._write_batch(None)
            if self._closing:  # what is still pending goes with the last transaction
                if self._pending or self._first is not None or self._last is not None:
                    await self._write_batch(self._last)
                return

    async def _linger(self) -> None:
        wait = self._written + LINGER - asyncio.get_running_loop().time()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), wait)

    async def _write_batch(self, last: Marks | None) -> None:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        self._taken.set()
        session_id = self._session_id
        if session_id == self._stored_session_id:
            session_id = None
        for tries_left in reversed(range(WRITE_TRIES)):
            try:
                stored = await anyio.to_thread.run_sync(self._write, batch, session_id, last)
                break
            except OperationalError:
                if not tries_left:
                    raise
                await asyncio.sleep(WRITE_PAUSE)
        self._stored_session_id = session_id or self._stored_session_id
        self._written = asyncio.get_running_loop().time()
        # the followers here take the events as they are; the last batch they read, with
        # whether the job has ended
        self._broker.publish(self._job_id, () if self._closing else stored)

    def _write(
        self, events: list[Event], session_id: str | None, last: Marks | None
    ) -> list[JobEvent]:
        """Blocking: stores the batch; returns its events as stored."""
        with self._database.connection() as connection:
            before: Sequence[Event] = ()
            if self._first is not None:
                before, session_id = self._first(connection, session_id), None
            after = last(connection) if last is not None else ()
            if session_id is not None:
                Transitions.record_session(connection, self._job_id, session_id)
            batch = [*before, *events, *after]
            seq = self._events.append_in(connection, self._job_id, batch, self._seq)
        self._first = None
        self._seq = seq
        return self._events.stored(self._job_id, batch, seq)

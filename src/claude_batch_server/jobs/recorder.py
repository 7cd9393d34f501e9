"""Writes a running job's transcript: its events in the order they arrive, as many per
transaction as have queued up while the last one was written.

A line that comes alone is stored at once, in a transaction of its own; lines that come
faster than the database takes them share one, so a chatty agent costs few transactions.
The Claude Code session id, once known, is stored with the events that revealed it, and
what the run's first transaction must also hold (the process, the start mark) with the
first events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
from sqlalchemy.orm import Session

from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.transcript import Event
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import Job

BACKLOG = 1000  # events waiting to be written before those who add more have to wait


class TranscriptRecorder:
    def __init__(
        self,
        database: Database,
        events: EventStore,
        broker: Broker,
        job_id: str,
        first: Callable[[Session], None],
    ) -> None:
        self._database = database
        self._first: Callable[[Session], None] | None = first
        self._events = events
        self._broker = broker
        self._job_id = job_id
        self._pending: list[Event] = []
        self._session_id: str | None = None
        self._stored_session_id: str | None = None
        self._wake = asyncio.Event()
        self._taken = asyncio.Event()
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name=f"transcript-{job_id}")
        self._wake.set()  # the first transaction is written at once, lines or not

    @property
    def started(self) -> bool:
        """Whether the first transaction is stored."""
        return self._first is None

    async def add(self, event: Event, session_id: str | None = None) -> None:
        self._pending.append(event)
        self._session_id = session_id or self._session_id
        self._wake.set()
        while len(self._pending) >= BACKLOG and not self._writer.done():
            self._taken.clear()
            await self._taken.wait()  # the agent's output waits in its pipe meanwhile

    async def close(self) -> None:
        """Returns once everything added is stored."""
        self._closing = True
        self._wake.set()
        await self._writer

    async def _write_loop(self) -> None:
        while not (self._closing and not self._pending):
            await self._wake.wait()
            self._wake.clear()
            while self._pending or self._first is not None:
                batch, self._pending = self._pending, []
                self._taken.set()
                session_id = self._session_id
                if session_id == self._stored_session_id:
                    session_id = None
                await anyio.to_thread.run_sync(self._write, batch, session_id)
                self._stored_session_id = session_id or self._stored_session_id
                self._broker.publish(self._job_id)

    def _write(self, events: list[Event], session_id: str | None) -> None:
        with self._database.session() as session:
            if self._first is not None:
                self._first(session)
            self._events.append_in(session, self._job_id, events)
            if session_id is not None and (row := session.get(Job, self._job_id)) is not None:
                row.session_id = session_id
        self._first = None

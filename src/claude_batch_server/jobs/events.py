"""A job's transcript in the database, and wake-ups for those who follow it live.

The database is the one source of truth: followers read from it, and the broker only
tells them, within this process, that there is something new to read.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, func, insert, select

from claude_batch_server.jobs.transcript import Event
from claude_batch_server.store.db import Database
from claude_batch_server.store.notify import Topic, publish_in
from claude_batch_server.store.tables import JOB_EVENTS, JobEvent

PAGE_EVENTS = 1000  # events in one page of a transcript, at most and by default
PAGE_BYTES = 4 * 1024 * 1024  # characters of event data after which a page ends
PAGE_FETCH = 100  # rows fetched from the database at a time
# built once: constructing a statement costs more than running it
_LAST_SEQ = select(func.max(JOB_EVENTS.c.seq)).where(JOB_EVENTS.c.job_id == bindparam("job_id"))
_INSERT = insert(JOB_EVENTS)
_SIZE = select(func.coalesce(func.sum(func.length(JOB_EVENTS.c.data)), 0)).where(
    JOB_EVENTS.c.job_id == bindparam("job_id")
)


class EventStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    @staticmethod
    def append_in(
        connection: Connection, job_id: str, events: Sequence[Event], after: int | None = None
    ) -> int:
        """Stores `events` in order after the job's last one, in the transaction of
        `connection`; returns the last sequence number. `after`: that last one's number,
        for a writer that knows it (the run's own recorder), or None to look it up."""
        seq = after if after is not None else connection.scalar(_LAST_SEQ, {"job_id": job_id}) or 0
        if events:  # one INSERT for the batch
            rows = [
                {
                    "job_id": job_id,
                    "seq": seq + n,
                    "time": event.time,  # when it arrived, not when its batch was written
                    "type": event.type,
                    "data": event.data,
                }
                for n, event in enumerate(events, 1)
            ]
            connection.execute(_INSERT, rows)
            publish_in(connection, Topic.EVENTS, job_id)  # followers in other processes
        return seq + len(events)

    def last(self, job_id: str) -> int:
        """The sequence number of the job's last event, 0 for none."""
        with self._database.read_connection() as connection:
            return int(connection.scalar(_LAST_SEQ, {"job_id": job_id}) or 0)

    def size(self, job_id: str) -> int:
        """Characters of the job's transcript kept, for JOB_OUTPUT_MAX_MB."""
        with self._database.read_connection() as connection:
            return int(connection.scalar(_SIZE, {"job_id": job_id}) or 0)

    def after(self, job_id: str, seq: int, limit: int = PAGE_EVENTS) -> list[JobEvent]:
        """One page: up to `limit` events after `seq`, ending early after the one that
        brings it past PAGE_BYTES, so that no page holds much of a large transcript."""
        query = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
            .order_by(JobEvent.seq)
            .limit(limit)
            .execution_options(yield_per=PAGE_FETCH)
        )
        page: list[JobEvent] = []
        size = 0
        with self._database.read(streamed=True) as session:
            for event in session.scalars(query):
                page.append(event)
                size += len(event.data)
                if size >= PAGE_BYTES:
                    break
        return page


class Broker:
    """In-process wake-ups: one asyncio.Event per subscriber (a job's feed, jobs/feeds.py),
    set when its job has news. `publish` may be called from any thread."""

    def __init__(self) -> None:
        self._followers: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self, job_id: str) -> asyncio.Event:
        self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._followers[job_id].add(event)
        return event

    def unsubscribe(self, job_id: str, event: asyncio.Event) -> None:
        followers = self._followers.get(job_id)
        if followers is not None:
            followers.discard(event)
            if not followers:
                del self._followers[job_id]

    def publish(self, job_id: str) -> None:
        if self._loop is None:
            return  # nobody ever subscribed
        try:
            here = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # a worker thread (a run finished by recovery)
            here = False
        if here:
            self._wake(job_id)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, job_id)

    def _wake(self, job_id: str) -> None:
        for event in self._followers.get(job_id, ()):
            event.set()

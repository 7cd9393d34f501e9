"""A job's transcript in the database, and news for those who follow it live.

The database is the one source of truth: followers read from it, and the broker tells
them, within this process, that there is something new: with the events just stored when
their writer hands them along (a run's recorder), so that the news need not be read back.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select

from claude_batch_server.jobs.transcript import Event
from claude_batch_server.store.db import Database
from claude_batch_server.store.notify import Topic, publish_in
from claude_batch_server.store.tables import JOB_EVENTS, JobEvent, detached

PAGE_EVENTS = 1000  # events in one page of a transcript, at most and by default
PAGE_BYTES = 4 * 1024 * 1024  # characters of event data after which a page ends
PAGE_FETCH = 100  # rows fetched from the database at a time
# built once: constructing a statement costs more than running it
_LAST_SEQ = select(func.max(JOB_EVENTS.c.seq)).where(JOB_EVENTS.c.job_id == bindparam("job_id"))
_INSERT = insert(JOB_EVENTS)
_SIZE = select(func.coalesce(func.sum(func.length(JOB_EVENTS.c.data)), 0)).where(
    JOB_EVENTS.c.job_id == bindparam("job_id")
)
News = Callable[[Sequence[JobEvent]], None]  # a subscriber: the events stored, or none


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
            connection.execute(_INSERT, _rows(job_id, events, seq))
            publish_in(connection, Topic.EVENTS, job_id)  # followers in other processes
        return seq + len(events)

    @staticmethod
    def stored(job_id: str, events: Sequence[Event], last: int) -> list[JobEvent]:
        """`events` as a read of them would hand them back, the last one numbered `last`
        (what `append_in` stored, for the followers in this process)."""
        return [detached(JobEvent, row) for row in _rows(job_id, events, last - len(events))]

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


def _rows(job_id: str, events: Sequence[Event], after: int) -> list[dict[str, Any]]:
    """`events` as rows of JOB_EVENTS, numbered on from `after`."""
    return [
        {
            "job_id": job_id,
            "seq": after + n,
            # when it arrived, not when its batch was written; in UTC, as UTCDateTime
            # stores it and reads it back
            "time": event.time.astimezone(UTC),
            "type": event.type,
            "data": event.data,
        }
        for n, event in enumerate(events, 1)
    ]


class Broker:
    """In-process news of a job's transcript: its subscribers (a job's feed, jobs/feeds.py)
    are called when it grew, with the events stored if the writer hands them along, or
    none (read them). `publish` may be called from any thread."""

    def __init__(self) -> None:
        self._followers: dict[str, set[News]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self, job_id: str, news: News) -> None:
        """`news` is called in the event loop of the caller."""
        self._loop = asyncio.get_running_loop()
        self._followers[job_id].add(news)

    def unsubscribe(self, job_id: str, news: News) -> None:
        followers = self._followers.get(job_id)
        if followers is not None:
            followers.discard(news)
            if not followers:
                del self._followers[job_id]

    def publish(self, job_id: str, stored: Sequence[JobEvent] = ()) -> None:
        """`stored`: the events just stored, in order, if at hand."""
        if self._loop is None:
            return  # nobody ever subscribed
        try:
            here = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # a worker thread (a run finished by recovery)
            here = False
        if here:
            self._tell(job_id, stored)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._tell, job_id, stored)

    def _tell(self, job_id: str, stored: Sequence[JobEvent]) -> None:
        for news in self._followers.get(job_id, ()):
            news(stored)

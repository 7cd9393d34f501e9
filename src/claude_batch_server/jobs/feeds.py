"""Following a job live: one reader per followed job in this process, shared by all who
follow it.

The followers of a job do not each poll the database: one task reads what is new when the
broker says there is (or every `FOLLOW_POLL` seconds, for runs of other processes) and
hands the same rows to every follower's queue. A queue holds `FOLLOWER_BACKLOG` events at
most: a follower that falls further behind (a slow client) loses its queue and reads on
from the database by itself, from its last event, until it has caught up. So a slow
follower stalls no one, and costs no more memory than its queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

import anyio

from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.logs import log
from claude_batch_server.store.tables import JobEvent

FOLLOW_POLL = 1.0  # seconds between looks for what runs of other processes wrote
FOLLOWER_BACKLOG = 256  # events queued for one follower, at most


class _Follower:
    def __init__(self) -> None:
        self.queue: deque[JobEvent] = deque()
        self.wake = asyncio.Event()
        self.behind = False  # its queue overflowed: it reads from the database


class _Feed:
    def __init__(self) -> None:
        self.followers: set[_Follower] = set()
        self.position = 0  # the last event handed out
        self.ready = asyncio.Event()  # `position` is known
        self.over = False  # the job has ended and every event is handed out
        self.reader: asyncio.Task[None] | None = None

    def hand_out(self, events: list[JobEvent]) -> None:
        for follower in self.followers:
            if not follower.behind:
                if len(follower.queue) + len(events) > FOLLOWER_BACKLOG:
                    follower.queue.clear()  # the database still has them
                    follower.behind = True
                else:
                    follower.queue.extend(events)
            follower.wake.set()
        self.position = events[-1].seq

    def end(self) -> None:
        self.over = True
        self.ready.set()
        for follower in self.followers:
            follower.wake.set()


class Feeds:
    def __init__(self, store: EventStore, broker: Broker, ended: Callable[[str], bool]) -> None:
        """`ended(job_id)`, blocking: whether the job has ended (or is gone)."""
        self._store = store
        self._broker = broker
        self._ended = ended
        self._feeds: dict[str, _Feed] = {}

    async def follow(self, job_id: str, after: int) -> AsyncIterator[JobEvent]:
        """The job's events after `after`, live, until the job has ended and all are sent."""
        feed = self._feeds.get(job_id) or self._open(job_id)
        me = _Follower()
        feed.followers.add(me)
        try:
            await feed.ready.wait()
            while True:
                async for event in self._catch_up(job_id, feed, me, after):
                    after = event.seq
                    yield event
                if me.queue:
                    event = me.queue.popleft()
                    if event.seq == after + 1:
                        after = event.seq
                        yield event
                    elif event.seq > after:  # a gap: the database has what is missing
                        me.behind = True
                    continue
                if feed.over:
                    return
                me.wake.clear()
                await me.wake.wait()
        finally:
            feed.followers.discard(me)
            if not feed.followers and feed.reader is not None:
                feed.reader.cancel()
                if self._feeds.get(job_id) is feed:  # one who comes now gets a feed of its own
                    del self._feeds[job_id]

    async def _catch_up(
        self, job_id: str, feed: _Feed, me: _Follower, after: int
    ) -> AsyncIterator[JobEvent]:
        """From the database, the events the follower misses before its queue (or, with
        none queued, up to what the feed has handed out): for a follower that starts
        behind the feed, or fell behind it."""
        while me.behind or after < (me.queue[0].seq - 1 if me.queue else feed.position):
            me.behind = False  # what is handed out from now on is queued again
            page = await anyio.to_thread.run_sync(self._store.after, job_id, after)
            if not page:  # deleted meanwhile, events and all
                return
            for event in page:
                after = event.seq
                yield event

    def _open(self, job_id: str) -> _Feed:
        feed = self._feeds[job_id] = _Feed()
        feed.reader = asyncio.create_task(self._read(job_id, feed), name=f"feed-{job_id}")
        return feed

    async def _read(self, job_id: str, feed: _Feed) -> None:
        wake = self._broker.subscribe(job_id)
        try:
            while True:
                wake.clear()
                try:
                    if not feed.ready.is_set():  # followers read up to here themselves
                        feed.position = await anyio.to_thread.run_sync(self._store.last, job_id)
                        feed.ready.set()
                    ended, batch = await anyio.to_thread.run_sync(self._next, job_id, feed.position)
                except Exception:  # the database may be away for a moment: retry
                    log.exception("reading a job's events failed", job=job_id)
                    ended, batch = False, []
                if batch:
                    feed.hand_out(batch)
                elif ended:
                    return
                else:
                    with anyio.move_on_after(FOLLOW_POLL):
                        await wake.wait()
        finally:
            self._broker.unsubscribe(job_id, wake)
            if self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
            feed.end()

    def _next(self, job_id: str, position: int) -> tuple[bool, list[JobEvent]]:
        """Blocking: whether the job had ended, then what came after `position`: read in
        this order, an empty page of an ended job is the end of its transcript."""
        ended = self._ended(job_id)
        return ended, self._store.after(job_id, position)

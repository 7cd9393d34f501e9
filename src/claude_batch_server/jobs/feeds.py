"""Following a job live: one reader per followed job in this process, shared by all who
follow it.

The followers of a job do not each poll the database: one task hands the same rows to
every follower's queue: those the broker brings along (a run of this process stored them),
else those it reads when the broker says there are new ones (or every `FOLLOW_POLL`
seconds, for runs of other processes), and whether the job has ended. A queue holds
`FOLLOWER_BACKLOG` events and PAGE_BYTES characters of them at most (a line may be large):
a follower that falls further behind (a slow client) loses its queue and reads on from the
database by itself, from its last event, until it has caught up. So a slow follower stalls
no one, and costs no more than its queue of the events all share.

What a follower reads from the database is its own: a page of up to PAGE_BYTES characters
and one more event (jobs/events.py), and its frames, held while the page is written to the
client, for as long as the client does not read. So the pages in flight are counted per
user (the caller, not the job's owner), FOLLOWER_PAGES_PER_USER at most: a follower takes a
permit before it reads a page, and gives it back when it asks for its next run, that is once
its consumer has written this page out (or when it is closed, as when its client went
away). A follower that never reads holds one permit and one page; a user's further
followers that need the database wait for a permit, holding no page; the live path (the
queues) takes none, and other users' followers are not held up. Consumers let go of a run
before they ask for the next, and ask for it only once the run is written out, but for a
last write of less than CHUNK_BYTES (api/routes/jobs.py `chunks`), so that a follower
waiting for a permit or for news holds little of what it read before. A JSON page of a
transcript takes a permit the same way (`page`). The budget is this process's: each server
process has its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio

from claude_batch_server.jobs.events import PAGE_BYTES, Broker, EventStore
from claude_batch_server.logs import log
from claude_batch_server.store.tables import JobEvent

FOLLOW_POLL = 1.0  # seconds between looks for what runs of other processes wrote
FOLLOWER_BACKLOG = 256  # events queued for one follower, at most
FOLLOWER_PAGES_PER_USER = 4  # pages read from the database one user may hold at once


class _Permits:
    def __init__(self) -> None:
        self.pages = asyncio.Semaphore(FOLLOWER_PAGES_PER_USER)
        self.users = 0  # those that hold a permit or wait for one


class PageBudget:
    """Each user's permits for pages in flight; a user's entry lives while one of theirs
    holds or waits for a permit, so that the names of users long gone are not kept."""

    def __init__(self) -> None:
        self._users: dict[str, _Permits] = {}

    @asynccontextmanager
    async def taken(self, user: str) -> AsyncIterator[None]:
        permits = self._users.setdefault(user, _Permits())
        permits.users += 1
        try:
            async with permits.pages:
                yield
        finally:
            permits.users -= 1
            if not permits.users:
                del self._users[user]


class _Follower:
    def __init__(self) -> None:
        self.queue: deque[JobEvent] = deque()
        self.queued = 0  # characters of event data in `queue`
        self.wake = asyncio.Event()
        self.behind = False  # its queue overflowed: it reads from the database

    def next_run(self, after: int) -> list[JobEvent]:
        """The queued events that follow on `after`, taken off the queue (those it has
        already seen are dropped); at a gap it is `behind`."""
        run: list[JobEvent] = []
        while self.queue:
            event = self.queue.popleft()
            self.queued -= len(event.data)
            if event.seq == after + 1:
                run.append(event)
                after = event.seq
            elif event.seq > after:  # a gap: the database has what is missing
                self.behind = True
                break
        return run


class _Feed:
    def __init__(self) -> None:
        self.followers: set[_Follower] = set()
        self.position = 0  # the last event handed out
        self.ready = asyncio.Event()  # `position` is known
        self.over = False  # the job has ended and every event is handed out
        self.reader: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()  # news
        self.stored: list[JobEvent] = []  # brought by the broker, not handed out yet
        self.unread = True  # the database may hold what the feed has not read

    def tell(self, stored: Sequence[JobEvent]) -> None:
        """The broker's news: the events just stored, or none (they are to be read)."""
        if stored and len(self.stored) + len(stored) <= FOLLOWER_BACKLOG:
            self.stored.extend(stored)
        else:
            self.stored.clear()  # the database has them
            self.unread = True
        self.wake.set()

    def hand_out_stored(self) -> None:
        """Hands out the events the broker brought that follow on from `position`; at a
        gap (another writer's events between), the feed reads the rest."""
        stored, self.stored = self.stored, []
        run: list[JobEvent] = []
        position = self.position
        for event in stored:
            if event.seq == position + 1:
                run.append(event)
                position = event.seq
            elif event.seq > position:
                self.unread = True
                break
        if run:
            self.hand_out(run)

    def hand_out(self, events: list[JobEvent]) -> None:
        size = sum(len(event.data) for event in events)
        for follower in self.followers:
            if not follower.behind:
                if (
                    len(follower.queue) + len(events) > FOLLOWER_BACKLOG
                    or follower.queued + size > PAGE_BYTES  # lines may be large (MAX_LINE)
                ):
                    follower.queue.clear()  # the database still has them
                    follower.queued = 0
                    follower.behind = True
                else:
                    follower.queue.extend(events)
                    follower.queued += size
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
        self._budget = PageBudget()

    async def page(
        self, job_id: str, after: int, limit: int, user: str
    ) -> AsyncGenerator[list[JobEvent], None]:
        """One page of the job's events (EventStore.after), yielded once, with a permit of
        `user`'s, given back once the consumer asks for more or closes this."""
        async with self._budget.taken(user):
            yield await anyio.to_thread.run_sync(self._store.after, job_id, after, limit)

    async def follow(
        self, job_id: str, after: int, user: str
    ) -> AsyncGenerator[list[JobEvent], None]:
        """The job's events after `after`, live, until the job has ended and all are sent:
        in runs of those there are for the follower when it asks (one, as a rule; more
        for one that lags), so that a lagging follower catches up in fewer writes. Pages
        from the database take a permit of `user`'s (the caller)."""
        feed = self._feeds.get(job_id) or self._open(job_id)
        me = _Follower()
        feed.followers.add(me)
        try:
            await feed.ready.wait()
            while True:
                if me.behind or after < (me.queue[0].seq - 1 if me.queue else feed.position):
                    # it starts behind the feed, or fell behind it: the database has the rest
                    async with self._budget.taken(user):  # until the page is written out
                        me.behind = False  # what is handed out from now on is queued again
                        known = feed.position  # stored, unless the job was deleted
                        page = await anyio.to_thread.run_sync(self._store.after, job_id, after)
                        if page:
                            after = page[-1].seq
                            yield page
                        elif after < known:  # deleted meanwhile, events and all
                            return
                        # else it had read ahead of the feed: its queue overflowed with
                        # events it had, and it is not behind
                    del page  # it may wait long for news or a permit: with none of this
                elif me.queue:
                    run = me.next_run(after)
                    if run:
                        after = run[-1].seq
                        yield run
                elif feed.over:
                    return
                else:
                    me.wake.clear()
                    await me.wake.wait()
        finally:
            feed.followers.discard(me)
            if not feed.followers and feed.reader is not None:
                feed.reader.cancel()
                if self._feeds.get(job_id) is feed:  # one who comes now gets a feed of its own
                    del self._feeds[job_id]

    def _open(self, job_id: str) -> _Feed:
        feed = self._feeds[job_id] = _Feed()
        feed.reader = asyncio.create_task(self._read(job_id, feed), name=f"feed-{job_id}")
        return feed

    async def _read(self, job_id: str, feed: _Feed) -> None:
        self._broker.subscribe(job_id, feed.tell)
        try:
            while True:
                feed.wake.clear()
                if feed.ready.is_set():
                    feed.hand_out_stored()
                if feed.unread or not feed.ready.is_set():
                    feed.unread = False
                    ended, batch = await self._read_next(job_id, feed)
                    if batch:
                        feed.hand_out(batch)
                        feed.unread = True  # a page: there may be more
                        continue
                    if ended:
                        return
                if not feed.wake.is_set():
                    with anyio.move_on_after(FOLLOW_POLL):
                        await feed.wake.wait()
                    feed.unread = feed.unread or not feed.wake.is_set()  # a poll
        finally:
            self._broker.unsubscribe(job_id, feed.tell)
            if self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
            feed.end()

    async def _read_next(self, job_id: str, feed: _Feed) -> tuple[bool, list[JobEvent]]:
        try:
            if not feed.ready.is_set():  # followers read up to here themselves
                feed.position = await anyio.to_thread.run_sync(self._store.last, job_id)
                feed.ready.set()
            return await anyio.to_thread.run_sync(self._next, job_id, feed.position)
        except Exception:  # the database may be away for a moment: retry
            log.exception("reading a job's events failed", job=job_id)
            return False, []

    def _next(self, job_id: str, position: int) -> tuple[bool, list[JobEvent]]:
        """Blocking: whether the job had ended, then what came after `position`: read in
        this order, an empty page of an ended job is the end of its transcript."""
        ended = self._ended(job_id)
        return ended, self._store.after(job_id, position)

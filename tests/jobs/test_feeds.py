"""Following a job live: many followers share one reader, every one of them receives every
event in order, and a follower that stops reading holds up no one and keeps no more than
its bounded queue; those that read from the database hold a few pages of their user's at
once."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import event, update

from claude_batch_server.api.routes.jobs import CHUNK_BYTES, chunks, event_frame
from claude_batch_server.jobs import feeds
from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.feeds import FOLLOWER_BACKLOG, FOLLOWER_PAGES_PER_USER, Feeds
from claude_batch_server.jobs.transcript import Event
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JOBS, JobEvent
from tests.jobs.conftest import add_running_job

FOLLOWERS = 100  # bench/api.py follows with 500; this is what a test run can afford
EVENTS = 3 * FOLLOWER_BACKLOG
DEADLINE = 60.0


@pytest.fixture(autouse=True)
def running_job(database: Database) -> None:
    add_running_job(database, "j1")


class Run:
    """What a run does to its transcript: appends events, tells the broker, and ends."""

    def __init__(self, database: Database, broker: Broker) -> None:
        self.database, self.broker = database, broker

    def append(self, first: int, count: int, along: bool = False, publish: bool = True) -> None:
        """`along`: hands the stored events to the broker, as a run's recorder does."""
        with self.database.connection() as connection:
            events = [Event("assistant", f'{{"n": {n}}}') for n in range(first, first + count)]
            last = EventStore.append_in(connection, "j1", events, first - 1)
        if publish:
            self.broker.publish("j1", EventStore.stored("j1", events, last) if along else ())

    def end(self) -> None:
        with self.database.connection() as connection:
            connection.execute(update(JOBS).values(status="completed"))
        self.broker.publish("j1")


def status_of(database: Database) -> bool:
    with database.read_connection() as connection:
        return connection.scalar(JOBS.select().with_only_columns(JOBS.c.status)) != "running"


async def collect(stream: AsyncIterator[list[JobEvent]]) -> list[int]:
    return [event.seq async for run in stream for event in run]


def test_every_follower_receives_every_event_in_order_from_one_reader(
    database: Database,
) -> None:
    broker = Broker()
    run = Run(database, broker)
    run.append(1, 10)  # before anyone follows
    reads: list[str] = []
    event.listen(
        database.engine,
        "before_cursor_execute",
        lambda *args: reads.append(args[2]) if "FROM job_events" in args[2] else None,
    )

    async def follow() -> list[list[int]]:
        hub = Feeds(EventStore(database), broker, lambda _: status_of(database))
        # some from the start, some from the middle of what was already written
        tasks = [
            asyncio.create_task(collect(hub.follow("j1", 0 if n % 2 else 5, "u")))
            for n in range(FOLLOWERS)
        ]
        await asyncio.sleep(0.1)
        for first in range(11, 11 + EVENTS, 20):  # batches, as the recorder writes them
            await asyncio.to_thread(run.append, first, 20)
            await asyncio.sleep(0.01)
        await asyncio.to_thread(run.end)
        return await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)

    seen = asyncio.run(follow())
    last = 10 + len(range(11, 11 + EVENTS, 20)) * 20
    for n, seqs in enumerate(seen):
        assert seqs == list(range(1 if n % 2 else 6, last + 1)), n
    # one reader for all: far fewer reads of the transcript than followers times batches
    assert len(reads) < FOLLOWERS + 4 * EVENTS // 20


def test_followers_take_the_events_the_writer_hands_along_without_reading_them_back(
    database: Database,
) -> None:
    broker = Broker()
    run = Run(database, broker)
    run.append(1, 10)
    reads: list[str] = []
    event.listen(
        database.engine,
        "before_cursor_execute",
        lambda *args: reads.append(args[2]) if "FROM job_events" in args[2] else None,
    )
    batches = range(11, 11 + EVENTS, 20)

    async def follow() -> list[list[JobEvent]]:
        hub = Feeds(EventStore(database), broker, lambda _: status_of(database))
        tasks = [
            asyncio.create_task(gather_events(hub.follow("j1", 10, "u"))) for _ in range(FOLLOWERS)
        ]
        await asyncio.sleep(0.1)
        for first in batches:
            # one batch is stored by another writer, unannounced: the next one leaves a gap
            await asyncio.to_thread(run.append, first, 20, True, first != 31)
            await asyncio.sleep(0.01)
        await asyncio.to_thread(run.end)
        return await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)

    seen = asyncio.run(follow())
    stored = EventStore(database).after("j1", 10)
    assert [event.seq for event in stored] == list(range(11, 11 + len(batches) * 20))
    for events in seen:  # the same events as read from the database, in order
        assert [fields(event) for event in events] == [fields(event) for event in stored]
    # the transcript was read to start, at the gap and at the end, not for every batch
    assert len(reads) < len(batches) // 4


def test_a_lagging_followers_run_goes_out_whole_in_order_in_writes_of_bounded_size() -> None:
    events = [Event("assistant", json.dumps({"n": n, "text": "x" * 1000})) for n in range(300)]
    run = EventStore.stored("j1", events, 300)
    writes = list(chunks(run))
    assert b"".join(writes) == b"".join(event_frame(event) for event in run)
    assert len(writes) > 1
    largest = max(len(event_frame(event)) for event in run)
    assert all(len(write) < CHUNK_BYTES + largest for write in writes)
    ids = re.findall(rb"^id: (\d+)\r$", b"".join(writes), re.MULTILINE)
    assert [int(seq) for seq in ids] == list(range(1, 301))


def test_the_events_brought_to_a_feed_that_is_busy_reading_are_bounded() -> None:
    async def tell() -> feeds._Feed:
        feed = feeds._Feed()
        feed.unread = False  # as after a read
        events = [Event("assistant", "{}") for _ in range(FOLLOWER_BACKLOG)]
        for last in range(FOLLOWER_BACKLOG, 4 * FOLLOWER_BACKLOG, FOLLOWER_BACKLOG):
            feed.tell(EventStore.stored("j1", events, last))  # its reader never takes them
            assert len(feed.stored) <= FOLLOWER_BACKLOG
        return feed

    feed = asyncio.run(tell())
    assert feed.unread  # the database has what it dropped


def fields(event: JobEvent) -> tuple[object, ...]:
    return event.job_id, event.seq, event.time, event.type, event.data


async def gather_events(stream: AsyncIterator[list[JobEvent]]) -> list[JobEvent]:
    return [event async for run in stream for event in run]


def test_a_slow_follower_stalls_no_one_and_keeps_a_bounded_queue(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker()
    run = Run(database, broker)
    longest: list[int] = []
    hand_out = feeds._Feed.hand_out

    def measured(self: feeds._Feed, events: list[JobEvent]) -> None:
        hand_out(self, events)
        longest.append(max(len(follower.queue) for follower in self.followers))

    monkeypatch.setattr(feeds._Feed, "hand_out", measured)

    async def follow() -> tuple[list[int], list[int]]:
        hub = Feeds(EventStore(database), broker, lambda _: status_of(database))
        slow = hub.follow("j1", 0, "u")
        [first] = await anext_after(slow, lambda: run.append(1, 1))  # it reads one, then stops
        fast = asyncio.create_task(collect(hub.follow("j1", 1, "u")))
        await asyncio.sleep(0.1)
        for n in range(2, 2 + EVENTS, 10):
            await asyncio.to_thread(run.append, n, 10)
            await asyncio.sleep(0.005)
        await asyncio.to_thread(run.end)
        fast_seen = await asyncio.wait_for(fast, DEADLINE)  # while the slow one still waits
        slow_seen = [first.seq, *await asyncio.wait_for(collect(slow), DEADLINE)]
        return fast_seen, slow_seen

    fast_seen, slow_seen = asyncio.run(follow())
    last = 1 + len(range(2, 2 + EVENTS, 10)) * 10
    assert fast_seen == list(range(2, last + 1))
    assert slow_seen == list(range(1, last + 1))  # it read on from the database
    assert max(longest) <= FOLLOWER_BACKLOG


async def anext_after(stream: AsyncIterator[list[JobEvent]], action: object) -> list[JobEvent]:
    """The first events of `stream`, once `action` (which writes them) has run."""
    waiting = asyncio.create_task(anext(stream))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    await asyncio.to_thread(action)  # type: ignore[arg-type]
    return await asyncio.wait_for(waiting, DEADLINE)


def test_a_users_followers_hold_a_few_pages_at_once_and_give_them_back(
    database: Database,
) -> None:
    run = Run(database, Broker())
    run.append(1, 10)
    run.end()  # its followers read it all from the database
    everything = list(range(1, 11))

    async def follow() -> None:
        hub = Feeds(EventStore(database), Broker(), lambda _: status_of(database))
        held = [hub.follow("j1", 0, "alice") for _ in range(FOLLOWER_PAGES_PER_USER)]
        for stream in held:  # each has its page, not written out yet
            assert [event.seq for event in await anext(stream)] == everything
        gone = asyncio.create_task(collect(hub.follow("j1", 0, "alice")))
        waiting = asyncio.create_task(collect(hub.follow("j1", 0, "alice")))
        users = hub._budget._users
        await until(lambda: users["alice"].users == FOLLOWER_PAGES_PER_USER + 2)
        # another user's follower is not held up by hers
        assert await asyncio.wait_for(collect(hub.follow("j1", 0, "bob")), DEADLINE) == everything
        assert not gone.done() and not waiting.done()  # they wait, without a page
        gone.cancel()  # its client goes away while it waits
        await held[0].aclose()  # this one's goes away with its page half written
        assert await asyncio.wait_for(waiting, DEADLINE) == everything
        for stream in held[1:]:  # the others write theirs out, and end
            assert await collect(stream) == []
        assert gone.cancelled()
        assert users == {}  # no one holds or waits: the user is forgotten

    asyncio.run(follow())


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "the condition was never met"
        await asyncio.sleep(0.01)


def test_a_follower_that_read_ahead_of_the_feed_is_not_ended_when_its_queue_overflows(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It waited for a permit while its queue filled, then read further than the feed had
    handed out: the events the feed hands out next, which it has, overflow its queue. Its
    next page is empty, and the job not over: it follows on."""
    monkeypatch.setattr(feeds, "FOLLOW_POLL", 3600.0)  # the feed reads only when told
    broker = Broker()
    run = Run(database, broker)
    run.append(1, 10)

    reads: list[str] = []
    event.listen(
        database.engine,
        "before_cursor_execute",
        lambda *args: reads.append(args[2]) if "FROM job_events" in args[2] else None,
    )

    def publish(first: int, count: int) -> None:
        events = [Event("assistant", f'{{"n": {n}}}') for n in range(first, first + count)]
        broker.publish("j1", EventStore.stored("j1", events, first + count - 1))

    async def follow() -> list[int]:
        hub = Feeds(EventStore(database), broker, lambda _: status_of(database))
        held = [hub.follow("j1", 0, "u") for _ in range(FOLLOWER_PAGES_PER_USER)]
        for stream in held:
            await anext(stream)
        ahead = hub.follow("j1", 0, "u")
        first = asyncio.create_task(anext(ahead))  # it waits for a permit
        await until(lambda: hub._budget._users["u"].users == FOLLOWER_PAGES_PER_USER + 1)
        await asyncio.to_thread(run.append, 11, 240, True)  # queued for it
        feed = hub._feeds["j1"]
        await until(lambda: feed.position == 250)
        await asyncio.to_thread(run.append, 251, 50, False, False)  # the feed knows not
        await held[0].aclose()
        seen = [event.seq for event in await asyncio.wait_for(first, DEADLINE)]
        assert seen == list(range(1, 301))  # further than the feed
        publish(251, 20)  # which overflows its queue of 240
        await until(lambda: feed.position == 270)
        before = len(reads)
        rest = asyncio.create_task(collect(ahead))  # it reads again: nothing yet
        await until(
            lambda: (
                len(reads) > before and hub._budget._users["u"].users == FOLLOWER_PAGES_PER_USER - 1
            )
        )
        await asyncio.to_thread(run.append, 301, 10, True)
        await asyncio.to_thread(run.end)
        seen += await asyncio.wait_for(rest, DEADLINE)
        for stream in held[1:]:
            await stream.aclose()
        return seen

    assert asyncio.run(follow()) == list(range(1, 311))

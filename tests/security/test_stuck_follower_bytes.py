"""A follower of a job that stops reading while the job prints large lines: its queue was
bounded in events only (FOLLOWER_BACKLOG, 256), and a line may be 8 MiB, so one stuck
follower per job kept up to 2 GiB of events alive (with their frames, rendered for the
others), and no budget counted it. Its queue holds a page's bytes (PAGE_BYTES) at most."""

from __future__ import annotations

import asyncio

import pytest

from claude_batch_server.jobs import feeds
from claude_batch_server.jobs.events import PAGE_BYTES, Broker, EventStore
from claude_batch_server.jobs.feeds import Feeds
from claude_batch_server.jobs.transcript import Event
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JobEvent
from tests.jobs.conftest import add_running_job
from tests.jobs.test_feeds import DEADLINE, Run, anext_after, collect, status_of
from tests.security.conftest import Attacks

LINE = 512 * 1024  # characters of each event
EVENTS = 40  # 20 MiB in all: five times PAGE_BYTES


@pytest.fixture(autouse=True)
def running_job(database: Database) -> None:
    add_running_job(database, "j1")


def test_a_stuck_followers_queue_is_bounded_in_bytes(
    database: Database, monkeypatch: pytest.MonkeyPatch, attacks: Attacks
) -> None:
    broker = Broker()
    run = Run(database, broker)
    largest: list[int] = []
    hand_out = feeds._Feed.hand_out

    def measured(self: feeds._Feed, events: list[JobEvent]) -> None:
        hand_out(self, events)
        queued = [sum(len(e.data) for e in follower.queue) for follower in self.followers]
        largest.append(max(queued))

    monkeypatch.setattr(feeds._Feed, "hand_out", measured)

    def append_large(n: int) -> None:
        with database.connection() as connection:
            events = [Event("assistant", f'{{"n": {n}, "a": "{"a" * LINE}"}}')]
            last = EventStore.append_in(connection, "j1", events, n - 1)
        broker.publish("j1", EventStore.stored("j1", events, last))

    async def follow() -> list[int]:
        hub = Feeds(EventStore(database), broker, lambda _: status_of(database))
        stuck = hub.follow("j1", 0, "u")
        await anext_after(stuck, lambda: run.append(1, 1))  # it reads one, then stops
        reader = asyncio.create_task(collect(hub.follow("j1", 1, "u")))
        await asyncio.sleep(0.1)
        for n in range(2, 2 + EVENTS):
            await asyncio.to_thread(append_large, n)
        await asyncio.to_thread(run.end)
        seen = await asyncio.wait_for(reader, DEADLINE)
        await stuck.aclose()
        return seen

    assert asyncio.run(follow()) == list(range(2, 2 + EVENTS))
    attacks.tried()
    assert max(largest) <= PAGE_BYTES, max(largest)

"""A user's budget of pages in flight (jobs/feeds.py) attacked from the inside: requests
cancelled at each point (during the database read, before their page is read, while they
wait for a permit, in the same turn as a permit is given back) give back what they took,
so the user's next requests are served; another user is never held up."""

from __future__ import annotations

import asyncio

import pytest

from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.feeds import FOLLOWER_PAGES_PER_USER, Feeds
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JobEvent
from tests.jobs.conftest import add_running_job
from tests.jobs.test_feeds import DEADLINE, Run, status_of
from tests.security.conftest import Attacks


@pytest.fixture(autouse=True)
def running_job(database: Database) -> None:
    add_running_job(database, "j1")


async def pages_at_once(hub: Feeds, user: str) -> list[list[JobEvent]]:
    """As many pages as the budget allows, held at once: each is served within the
    deadline, only if no permit leaked."""
    held = [hub.page("j1", 0, 100, user) for _ in range(FOLLOWER_PAGES_PER_USER)]
    pages = [await asyncio.wait_for(anext(page), DEADLINE) for page in held]
    for page in held:
        await page.aclose()
    return pages


def test_cancelled_pages_give_back_their_permits(database: Database, attacks: Attacks) -> None:
    run = Run(database, Broker())
    run.append(1, 5)
    run.end()

    async def attack() -> None:
        hub = Feeds(EventStore(database), Broker(), lambda _: status_of(database))
        for _ in range(FOLLOWER_PAGES_PER_USER + 1):
            # never started, closed before the first read
            await hub.page("j1", 0, 100, "alice").aclose()
            # cancelled while it reads (a client gone during the database read)
            reading = asyncio.create_task(anext(hub.page("j1", 0, 100, "alice")))
            await asyncio.sleep(0)
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            # an error thrown into it while its page is held (a write that failed)
            page = hub.page("j1", 0, 100, "alice")
            await anext(page)
            with pytest.raises(OSError):
                await page.athrow(OSError("client gone"))
            attacks.tried(3)
        assert [len(page) for page in await pages_at_once(hub, "alice")] == [5] * 4

        # the whole budget held; waiters cancelled in the very turn a permit comes back
        held = [hub.page("j1", 0, 100, "alice") for _ in range(FOLLOWER_PAGES_PER_USER)]
        for page in held:
            await anext(page)
        firsts, seconds = hub.page("j1", 0, 100, "alice"), hub.page("j1", 0, 100, "alice")
        first, second = asyncio.create_task(anext(firsts)), asyncio.create_task(anext(seconds))
        await asyncio.sleep(0.1)
        assert not first.done() and not second.done()
        # another user is not held up meanwhile
        bobs = hub.page("j1", 0, 100, "bob")
        assert len(await asyncio.wait_for(anext(bobs), DEADLINE)) == 5
        await bobs.aclose()
        await held[0].aclose()  # gives a permit to `first`...
        first.cancel()  # ... which its client leaves at once
        attacks.tried()
        assert len(await asyncio.wait_for(second, DEADLINE)) == 5
        for page in [*held[1:], firsts, seconds]:
            await page.aclose()
        await asyncio.gather(first, return_exceptions=True)
        assert [len(page) for page in await pages_at_once(hub, "alice")] == [5] * 4

    asyncio.run(attack())

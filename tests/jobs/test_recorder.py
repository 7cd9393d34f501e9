"""The transcript recorder: every event stored, in order, and few transactions for many
lines."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, event, select, update
from sqlalchemy.exc import IntegrityError

from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.recorder import BACKLOG, OutputBudget, TranscriptRecorder
from claude_batch_server.jobs.transcript import Event
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JOBS, Job, JobEvent
from tests.jobs.conftest import add_running_job

LINES = 3 * BACKLOG
PLENTY = OutputBudget(1 << 40, lambda: None)


@pytest.fixture(autouse=True)
def running_job(database: Database) -> None:
    add_running_job(database, "j1")


def test_a_flood_of_lines_is_stored_whole_in_order_in_few_transactions(
    database: Database,
) -> None:
    with database.connection() as connection:  # an earlier run's transcript
        EventStore.append_in(connection, "j1", [Event("server", "before"), Event("x", "y")])
    commits: list[int] = []
    event.listen(database.engine, "commit", lambda _: commits.append(1))

    def first(connection: Connection, session_id: str | None) -> list[Event]:
        if session_id is not None:  # known already: the start holds it
            connection.execute(update(JOBS).values(session_id=session_id))
        return [Event("server", "start")]

    async def flood() -> None:
        recorder = TranscriptRecorder(
            database,
            EventStore(database),
            Broker(),
            "j1",
            first,
            lambda: None,
            PLENTY,
        )
        for n in range(LINES):
            await recorder.add(Event("assistant", str(n)), "session-1" if n > 10 else None)
        await recorder.close(lambda _: [Event("server", "end")])
        assert recorder.started

    asyncio.run(flood())

    with database.read() as session:
        rows = session.scalars(select(JobEvent).order_by(JobEvent.seq)).all()
        job = session.get(Job, "j1")
    assert [row.seq for row in rows] == list(range(1, LINES + 5))
    lines = list(map(str, range(LINES)))
    assert [row.data for row in rows] == ["before", "y", "start", *lines, "end"]
    assert job is not None and job.session_id == "session-1"
    assert len(commits) < LINES / 10


def test_a_transcript_that_cannot_be_written_stops_the_run(database: Database) -> None:
    stopped: list[str] = []

    async def orphan() -> None:
        recorder = TranscriptRecorder(
            database,
            EventStore(database),
            Broker(),
            "no-such-job",  # its events break the foreign key
            lambda _, __: (),
            lambda: stopped.append("stop"),
            PLENTY,
        )
        await recorder.add(Event("assistant", "lost"))
        with pytest.raises(IntegrityError):
            await recorder.close()
        await recorder.add(Event("assistant", "dropped"))  # neither waits nor piles up
        assert not recorder.started

    asyncio.run(orphan())
    assert stopped == ["stop"]


def test_events_past_the_budget_are_not_kept_and_it_says_so_once(database: Database) -> None:
    exceeded: list[str] = []

    async def chatty() -> None:
        budget = OutputBudget(25, lambda: exceeded.append("full"))
        recorder = TranscriptRecorder(
            database, EventStore(database), Broker(), "j1", lambda _, __: (), lambda: None, budget
        )
        for n in range(10):
            await recorder.add(Event("assistant", f"line {n:02}"))  # 7 characters each
        await recorder.close(lambda _: [Event("server", "end")])

    asyncio.run(chatty())

    with database.read() as session:
        rows = session.scalars(select(JobEvent).order_by(JobEvent.seq)).all()
    assert [row.data for row in rows] == ["line 00", "line 01", "line 02", "end"]
    assert exceeded == ["full"]

"""The state machine on its own, on both databases: each named transition moves a job
only from the statuses `status.TRANSITIONS` lists, and refuses otherwise."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, select

from claude_batch_server.jobs.outcome import Outcome
from claude_batch_server.jobs.status import ENDED, TRANSITIONS, JobStatus
from claude_batch_server.jobs.transcript import RunResult
from claude_batch_server.jobs.transitions import Transitions
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JOBS, Job, utcnow

LATER = timedelta(seconds=30)


def _job(database: Database, transitions: Transitions, job_id: str) -> None:
    with database.session() as session:
        transitions.create(
            session,
            Job(
                id=job_id,
                user="u",
                repository="r",
                repository_id="r",
                prompt="p",
                run_prompt="p",
                status=JobStatus.CREATED,
            ),
        )


def _status(connection: Connection, job_id: str) -> str | None:
    return connection.scalar(select(JOBS.c.status).where(JOBS.c.id == job_id))


def test_every_status_is_reached_and_left_only_by_named_transitions() -> None:
    reached = {status for t in TRANSITIONS for status in t.after} | {JobStatus.CREATED}
    left = {status for t in TRANSITIONS for status in t.before}
    assert reached == set(JobStatus)
    assert left == set(JobStatus)  # every end can be resumed


def test_a_job_moves_through_its_life_and_each_move_happens_once(database: Database) -> None:
    ended: list[str] = []
    ours = Transitions("us", lambda _, job_id: ended.append(job_id))
    theirs = Transitions("them", lambda _, job_id: ended.append(job_id))
    _job(database, ours, "j1")
    now = utcnow()
    with database.connection() as connection:
        assert ours.resume(connection, "j1", "again", now) is None  # not ended yet
        assert ours.start(connection, "j1", "p", now) is not None
        assert ours.start(connection, "j1", "p", now) is None  # once
        assert _status(connection, "j1") == JobStatus.QUEUED
        claimed = Transitions.claim(connection, "u", "us", now, now + LATER)
        assert claimed is not None and claimed.status == JobStatus.RUNNING
        assert Transitions.claim(connection, "u", "us", now, now + LATER) is None  # none left
        assert not ours.cancel(connection, "j1", now)  # running: stopped, not cancelled here
        failed = Outcome(JobStatus.FAILED, 1, "boom")
        assert not theirs.finish(connection, "j1", failed, RunResult(), now)  # not their run
        assert ended == []
        assert ours.finish(connection, "j1", failed, RunResult(), now)
        assert not ours.finish(connection, "j1", failed, RunResult(), now)  # once
        assert _status(connection, "j1") in ENDED
        assert ours.resume(connection, "j1", "again", now) is not None
        assert ours.cancel(connection, "j1", now)
        assert _status(connection, "j1") == JobStatus.CANCELLED
    assert ended == ["j1", "j1"]  # the end of a run, and the cancel


def test_a_created_job_is_cancelled_at_once_and_cannot_start_then(database: Database) -> None:
    transitions = Transitions("us", lambda *_: None)
    _job(database, transitions, "j2")
    with database.connection() as connection:
        assert transitions.cancel(connection, "j2", utcnow())
        assert transitions.start(connection, "j2", "p", utcnow()) is None
        assert not transitions.add_images(connection, "j2", ["a.png"])

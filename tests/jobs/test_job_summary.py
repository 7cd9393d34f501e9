"""The dashboard's lists read jobs as `JobReader.page` hands them: the SUMMARY columns,
the prompt cut at SUMMARY_PROMPT characters (not bytes), the caller's jobs alone, on
both databases."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from claude_batch_server.accounts import Account
from claude_batch_server.auth.service import User
from claude_batch_server.auth.tokens import Claims
from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.queue import JobQueue, Limits
from claude_batch_server.jobs.reading import ALL_USERS, SUMMARY_PROMPT, JobReader
from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.jobs.transitions import Transitions
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import Job, utcnow


def _user(name: str, admin: bool = False) -> User:
    account = Account(name, 1000, 1000, Path("/nonexistent"), "/bin/sh", (1000,), (name,))
    return User(account, admin, Claims(name, "jti", utcnow() + timedelta(hours=1)))


def _job(database: Database, job_id: str, user: str, prompt: str) -> None:
    job = Job(
        id=job_id,
        user=user,
        repository="shop",
        repository_id="shop",
        prompt=prompt,
        run_prompt=prompt,
        status=JobStatus.CREATED,
    )
    with database.session() as session:
        Transitions("us", lambda *_: None).create(session, job)


def test_a_page_holds_the_callers_jobs_with_their_prompts_cut(database: Database) -> None:
    queue = JobQueue(database, Limits(1, 0), "us", timedelta(seconds=30))
    reader = JobReader(database, queue, EventStore(database), Broker())
    long = "é" * (SUMMARY_PROMPT - 1) + "ü" + "the rest " * 100  # two bytes a character
    _job(database, "a1", "alice", long)
    _job(database, "a2", "alice", "short")
    _job(database, "b1", "bob", "bob's")

    page = reader.page(_user("alice"), None, 10, None, None)
    prompts = {job.id: job.prompt for job in page.jobs}
    assert prompts == {"a1": long[:SUMMARY_PROMPT], "a2": "short"}
    assert prompts["a1"].endswith("éü")
    everyone = reader.page(_user("root", admin=True), None, 10, None, ALL_USERS)
    assert sorted(job.id for job in everyone.jobs) == ["a1", "a2", "b1"]
    assert [job.id for job in reader.page(_user("bob"), None, 10, None, None).jobs] == ["b1"]

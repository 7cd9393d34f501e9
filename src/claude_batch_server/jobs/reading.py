"""Reading jobs and following them: one job as its caller may see it, pages of jobs and
of a transcript, a transcript followed live, the admin page's totals. Nothing here
writes."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, RowMapping, Select, bindparam, case, func, literal, select
from sqlalchemy.sql import ColumnElement

from claude_batch_server.auth.service import User
from claude_batch_server.errors import BadRequest, Forbidden, NotFound
from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.feeds import Feeds
from claude_batch_server.jobs.queue import JobQueue
from claude_batch_server.jobs.status import ACTIVE, JobStatus
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JOB_VERSIONS, JOBS, Job, JobEvent, detached

ALL_USERS = "*"  # an admin's `owner` for every user's jobs
MAX_TOTALS = 10_000  # users on the admin page's totals
# characters of prompts, outputs and errors a listing's page holds, past its first job: a
# user's 500 jobs of 512 Ki-character prompts and outputs made one page of half a GB, and
# four at once 3.8 GB of the server's memory; a longer list is paged further (next_cursor)
PAGE_CHARS = 4 * 1024 * 1024
CURSOR_PATTERN = r"^[0-9]{1,20}-[0-9a-f]{32}$"  # microseconds since 1970, then the job id
_LATEST = datetime.max.replace(tzinfo=UTC)
# what a listed job weighs against PAGE_CHARS: its texts that may be long
_SIZE = sum(
    (func.coalesce(func.length(JOBS.c[name]), 0) for name in ("prompt", "output", "error")),
    start=literal(0),
)
# built once, for it runs on every request naming a job
_FIND = select(JOBS).where(JOBS.c.id == bindparam("job_id"))
_STATUS = select(JOBS.c.status).where(JOBS.c.id == bindparam("job_id"))
# what the dashboard's lists show of a job (page), its prompt's start alone
SUMMARY_PROMPT = 1000
SUMMARY = [
    *(JOBS.c[name] for name in ("id", "user", "repository", "status", "queued_at")),
    *(JOBS.c[name] for name in ("created_at", "started_at", "completed_at")),
    *(JOBS.c[name] for name in ("num_turns", "cost_usd")),
    func.substr(JOBS.c.prompt, 1, SUMMARY_PROMPT).label("prompt"),
]
# what a listing shows of a job: its answer's fields, and when it was queued
LISTED = [
    JOBS.c[name]
    for name in (
        *("id", "user", "repository", "prompt", "status", "queued_at", "created_at"),
        *("started_at", "completed_at", "exit_code", "output", "error", "session_id"),
        *("num_turns", "cost_usd", "input_tokens", "output_tokens", "cpu_seconds"),
        *("memory_peak_bytes", "images", "options", "result"),
    )
]


_VERSION = select(JOB_VERSIONS.c.version).where(JOB_VERSIONS.c.user == bindparam("user"))


def _listed(user: User, owner: str | None) -> str | None:
    """Whose jobs a listing of `user`'s with `owner` shows: None for every user's."""
    if owner and owner != user.name and not user.admin:
        raise Forbidden("only members of ADMIN_GROUP may list other users' jobs")
    return None if owner == ALL_USERS else owner or user.name


@dataclass(frozen=True)
class UserTotals:
    user: str
    jobs: int
    active: int
    cost_usd: float


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


class Listed(NamedTuple):
    owner: str  # whose jobs a listing shows
    version: int  # how often they have changed (store/tables.py JobVersion)


@dataclass(frozen=True)
class Listing:
    """A page of jobs as rows of LISTED, each with its position in the queue if queued."""

    jobs: list[tuple[RowMapping, int | None]]
    next_cursor: str | None


class JobReader:
    def __init__(
        self, database: Database, queue: JobQueue, events: EventStore, broker: Broker
    ) -> None:
        self._database = database
        self._queue = queue
        self._events = events
        self._feeds = Feeds(events, broker, self._ended)

    def visible(self, user: User, job_id: str) -> Job:
        """The job if `user` may see it; 404 otherwise, whether or not it exists."""
        job = self.find(job_id) if len(job_id) <= 32 else None
        if job is None or not (user.admin or job.user == user.name):
            raise NotFound(f"job {job_id!r} not found")
        return job

    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        return job

    def find(self, job_id: str) -> Job | None:
        """By Core: read on every request that names a job, it needs no identity map."""
        with self._database.read_connection() as connection:
            row = connection.execute(_FIND, {"job_id": job_id}).first()
        return None if row is None else detached(Job, row)

    def status(self, job_id: str) -> str:
        with self._database.read_connection() as connection:
            status = connection.scalar(_STATUS, {"job_id": job_id})
        return status or "gone"

    def position(self, job: Job) -> int | None:
        return self._queue.position(job)

    def page(
        self,
        user: User,
        status: str | None,
        limit: int,
        cursor: str | None,
        owner: str | None,
        repository: str | None = None,
    ) -> JobPage:
        """Newest first: the caller's jobs, or `owner`'s (`*`: everyone's) for an admin, as
        the dashboard's lists show them: jobs of the SUMMARY columns alone, their prompts
        cut at SUMMARY_PROMPT characters (a page of whole jobs could weigh gigabytes)."""
        query = self._page_query(SUMMARY, user, status, limit, cursor, owner, repository)
        # Core, and models made from its rows: the ORM's loading costs more than the query
        with self._database.read_connection() as connection:
            jobs = [detached(Job, row) for row in connection.execute(query)]
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return JobPage(jobs, _encode_cursor(jobs[-1].created_at, jobs[-1].id) if more else None)

    def listing(
        self, user: User, status: str | None, limit: int, cursor: str | None, owner: str | None
    ) -> Listing:
        """`page`, as rows of the columns a listing shows and each queued job's position,
        in one transaction: no model is made, for each of a page's rows costs more than the
        query (bench/api.py). Fewer than `limit` when they are large (PAGE_CHARS)."""
        sizes = self._page_query([_SIZE], user, status, limit, cursor, owner, None)
        with self._database.read_connection() as connection:
            # the rows' sizes first (a few numbers), then only the rows that fit the page
            lengths = connection.execute(sizes).scalars().all()
            fitting = _fitting(lengths, limit)
            more = len(lengths) > fitting
            query = self._page_query(LISTED, user, status, fitting, cursor, owner, None)
            rows = connection.execute(query).mappings().all()[:fitting]
            positions = [
                JobQueue.position_in(connection, row["queued_at"])
                if row["status"] == JobStatus.QUEUED and row["queued_at"] is not None
                else None
                for row in rows
            ]
        last = rows[-1] if more else None
        cursor = None if last is None else _encode_cursor(last["created_at"], last["id"])
        return Listing(list(zip(rows, positions, strict=True)), cursor)

    def version(self, user: User, owner: str | None) -> Listed | None:
        """Whose jobs `user` lists, given `owner`, and how often they have changed; None
        for every user's jobs. Forbidden as `listing` is."""
        listed = _listed(user, owner)
        if listed is None:
            return None
        with self._database.read_connection() as connection:
            version = connection.execute(_VERSION, {"user": listed}).scalar()
        return Listed(listed, version or 0)

    @staticmethod
    def _page_query(
        columns: Iterable[ColumnElement[Any]],
        user: User,
        status: str | None,
        limit: int,
        cursor: str | None,
        owner: str | None,
        repository: str | None,
    ) -> Select[Any]:
        listed = _listed(user, owner)
        c = JOBS.c
        query = select(*columns).order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)
        if listed is not None:
            query = query.where(c.user == listed)
        if status:
            query = query.where(c.status == status)
        if repository:
            query = query.where(c.repository == repository)
        if cursor:
            created, job_id = _decode_cursor(cursor)
            query = query.where(
                (c.created_at < created) | ((c.created_at == created) & (c.id < job_id))
            )
        return query

    def events_page(self, job_id: str, seq: int, limit: int) -> list[JobEvent]:
        """At most `limit` events after `seq`, fewer when they are large: one page of a
        long transcript (see EventStore.after)."""
        return self._events.after(job_id, seq, limit)

    def events_page_to_send(
        self, job_id: str, seq: int, limit: int, caller: str
    ) -> AsyncGenerator[list[JobEvent], None]:
        """`events_page`, yielded once, held within the caller's budget of pages in flight
        until the consumer asks for more, having sent it (jobs/feeds.py)."""
        return self._feeds.page(job_id, seq, limit, caller)

    def follow(self, job_id: str, after: int, caller: str) -> AsyncGenerator[list[JobEvent], None]:
        """The job's events after `after`, live, until the job has ended and all are sent
        (in runs: more than one for a follower that lags). Let go of a run before asking
        for the next: pages read from the database for a follower that lags count against
        the caller's budget until then (jobs/feeds.py).

        Woken at once by runs of this process, and by those of other processes on the
        same PostgreSQL through their notifications; at worst, news is noticed within
        `FOLLOW_POLL` seconds (jobs/feeds.py)."""
        return self._feeds.follow(job_id, after, caller)

    def _ended(self, job_id: str) -> bool:
        return self.status(job_id) not in ACTIVE | {JobStatus.CREATED}

    def totals_by_user(self) -> list[UserTotals]:
        """Every user's job count, active jobs and cost, for the admin page."""
        active = func.sum(case((Job.status.in_(list(ACTIVE)), 1), else_=0))
        query = (
            select(Job.user, func.count(), active, func.sum(Job.cost_usd))
            .group_by(Job.user)
            .order_by(Job.user)
            .limit(MAX_TOTALS)
        )
        with self._database.read() as session:
            rows = session.execute(query).all()
        return [
            UserTotals(name, jobs, int(busy or 0), float(cost or 0))
            for name, jobs, busy, cost in rows
        ]


def _fitting(lengths: Sequence[int], limit: int) -> int:
    """How many of a page's first rows, of these sizes, fit PAGE_CHARS: one at least."""
    total = 0
    for count, length in enumerate(lengths[:limit]):
        if count and total + length > PAGE_CHARS:
            return count
        total += length
    return min(len(lengths), limit)


def _encode_cursor(created_at: datetime, job_id: str) -> str:
    return f"{int(created_at.timestamp() * 1_000_000)}-{job_id}"


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise BadRequest("invalid cursor")
    micros, job_id = cursor.split("-")
    try:
        return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), job_id
    except (OverflowError, ValueError, OSError):
        return _LATEST, job_id  # past any job: the first page


_ACTIVE_OF = (
    select(func.count())
    .select_from(JOBS)
    .where(JOBS.c.repository_id == bindparam("repo_id"), JOBS.c.status.in_(sorted(ACTIVE)))
)


def active_jobs_in(connection: Connection, repo_id: str) -> int:
    """Queued or running jobs of the repository `repo_id`, whoever started them, in the
    transaction of `connection` (the repository's removal holds it)."""
    return int(connection.scalar(_ACTIVE_OF, {"repo_id": repo_id}) or 0)

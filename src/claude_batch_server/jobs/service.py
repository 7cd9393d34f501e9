"""The lifecycle of a job: create, add images, start, cancel, resume, delete, and reading it.

Statuses move only as `JobStatus` documents; every move is one conditional update, so a
cancel racing a claim ends in one consistent state.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import bindparam, case, delete, func, select, update

from claude_batch_server.audit import Audit
from claude_batch_server.auth.service import User
from claude_batch_server.errors import BadRequest, Conflict, Forbidden, NotFound
from claude_batch_server.jobs.dispatcher import Dispatcher
from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.images import MAX_IMAGES, ImageStore, safe_name
from claude_batch_server.jobs.queue import POSITION, JobQueue
from claude_batch_server.jobs.status import ACTIVE, ENDED, JobStatus
from claude_batch_server.repositories.service import RepositoryService, RepoStatus
from claude_batch_server.repositories.validation import check_text
from claude_batch_server.results.service import ResultService
from claude_batch_server.store.db import Database
from claude_batch_server.store.notify import Topic, publish_in
from claude_batch_server.store.tables import JOBS, Job, JobEvent, UTCDateTime, detached, utcnow
from claude_batch_server.workspaces.engine import WorkspaceEngine

DELETE_WAIT = 30.0  # seconds a DELETE waits for a job running elsewhere to stop
FOLLOW_POLL = 1.0
ALL_USERS = "*"  # an admin's `owner` for every user's jobs
MAX_TOTALS = 10_000  # users on the admin page's totals


# Built once, for they run on every request naming a job, and on every start or resume.
_FIND = select(JOBS).where(JOBS.c.id == bindparam("job_id"))
_ENQUEUE = (
    update(JOBS)
    .where(
        JOBS.c.id == bindparam("job_id"),
        JOBS.c.status.in_(bindparam("states", expanding=True)),
        JOBS.c.workspace_removed.is_(False),  # a resume may race the retention sweep
    )
    .values(
        status=JobStatus.QUEUED,
        queued_at=bindparam("queued_at", type_=UTCDateTime),  # POSITION counts those before
        run_prompt=bindparam("new_prompt"),
        cancel_requested=False,
        error=None,
    )
    .returning(*JOBS.c, POSITION)
)


@dataclass(frozen=True)
class JobRequest:
    prompt: str
    repository: str  # a name of the caller's, or of `owner`'s (admins only)
    options: dict[str, Any]
    images: list[str] = field(default_factory=list)
    owner: str | None = None


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


class JobService:
    def __init__(
        self,
        database: Database,
        queue: JobQueue,
        dispatcher: Dispatcher,
        events: EventStore,
        broker: Broker,
        images: ImageStore,
        workspaces: WorkspaceEngine,
        repositories: RepositoryService,
        results: ResultService,
    ) -> None:
        self._database = database
        self._queue = queue
        self._dispatcher = dispatcher
        self._events = events
        self._broker = broker
        self._images = images
        self._workspaces = workspaces
        self._repositories = repositories
        self._results = results

    def visible(self, user: User, job_id: str) -> Job:
        """The job if `user` may see it; 404 otherwise, whether or not it exists."""
        job = self._find(job_id) if len(job_id) <= 32 else None
        if job is None or not (user.admin or job.user == user.name):
            raise NotFound(f"job {job_id!r} not found")
        return job

    def position(self, job: Job) -> int | None:
        return self._queue.position(job)

    def create(self, user: User, request: JobRequest, audit: Audit | None = None) -> Job:
        check_text("prompt", request.prompt)
        repo = self._repositories.visible(user, request.repository, request.owner)
        if repo.status != RepoStatus.READY:
            raise Conflict(f"repository {repo.name!r} is {repo.status}, not ready")
        expected = [safe_name(name, set()) for name in request.images]
        if len(expected) > MAX_IMAGES:
            raise BadRequest(f"at most {MAX_IMAGES} images")
        job_id = uuid.uuid4().hex
        job = Job(
            id=job_id,
            user=user.name,
            repository=repo.name,
            repository_id=repo.id,
            prompt=request.prompt,
            run_prompt=request.prompt,
            options=self._results.checked_options(job_id, repo, request.options),
            images=[],
            expected_images=expected,
            status=JobStatus.CREATED,
            created_at=utcnow(),
            runs=0,
            num_turns=0,
            cost_usd=0.0,
            input_tokens=0,
            output_tokens=0,
            cancel_requested=False,
            workspace_removed=False,
        )
        with self._database.session() as session:
            session.add(job)
            if audit is not None:
                audit.record_in(session)
        return job

    def add_images(self, job: Job, files: list[tuple[str | None, bytes]]) -> list[tuple[str, int]]:
        if job.status != JobStatus.CREATED:
            raise Conflict("images can be added only while the job is created")
        if len(job.images) + len(files) > MAX_IMAGES:
            raise BadRequest(f"at most {MAX_IMAGES} images")
        taken, saved = set(job.images), []
        for filename, data in files:
            name = safe_name(filename, taken)
            self._images.save(job.id, name, data)
            taken.add(name)
            saved.append((name, len(data)))
        with self._database.session() as session:
            row = session.get(Job, job.id)
            if row is None or row.status != JobStatus.CREATED:
                raise Conflict("images can be added only while the job is created")
            row.images = [*row.images, *(name for name, _ in saved)]
        return saved

    def start(self, job: Job, audit: Audit | None = None) -> tuple[Job, int | None]:
        """The job, now queued, and its queue position."""
        missing = [name for name in job.expected_images if name not in job.images]
        if missing:
            raise Conflict(f"images named at creation are not uploaded: {', '.join(missing)}")
        return self._enqueue(job, JobStatus.CREATED, job.prompt, audit)

    def resume(self, job: Job, prompt: str, audit: Audit | None = None) -> tuple[Job, int | None]:
        if job.workspace_removed:
            raise Conflict("the job's workspace has been removed")
        return self._enqueue(job, ENDED, check_text("prompt", prompt), audit)

    def _enqueue(
        self,
        job: Job,
        allowed: JobStatus | frozenset[JobStatus],
        prompt: str,
        audit: Audit | None,
    ) -> tuple[Job, int | None]:
        """One transaction: the move to `queued`, its audit row, the queue position, and,
        when this process has a free slot, the claim of the next job (this one, unless
        others come first), which then starts without waiting for the dispatch loop."""
        states = [allowed] if isinstance(allowed, JobStatus) else list(allowed)
        values = {"job_id": job.id, "states": states, "queued_at": utcnow(), "new_prompt": prompt}
        with self._database.connection() as connection:
            row = connection.execute(_ENQUEUE, values).first()
            if row is None:
                status = connection.scalar(select(JOBS.c.status).where(JOBS.c.id == job.id))
                raise Conflict(f"job {job.id} is {status or 'gone'}")
            if audit is not None:
                audit.record_in(connection)
            claim, more = (None, True)
            if self._dispatcher.accepts():
                claim, more = self._queue.claim_in(connection)
            if more:  # for whichever process has a slot free
                publish_in(connection, Topic.QUEUE)
        if claim is not None:
            self._dispatcher.hand_over(claim)
        if more:
            self._dispatcher.wake()
        fields = dict(row._mapping)  # the job as queued: what the caller is told
        position: int = fields.pop(POSITION.name)
        return detached(Job, fields), position

    async def cancel(self, job: Job) -> Job:
        """Queued or created: cancelled at once. Running: stopped, and cancelled once its
        process group is gone."""
        if await anyio.to_thread.run_sync(self._cancel_waiting, job.id):
            return await anyio.to_thread.run_sync(self._get, job.id)
        if not await anyio.to_thread.run_sync(self._request_cancel, job.id):
            raise Conflict(f"job {job.id} is {self._status(job.id)}")
        self._dispatcher.stop_job(job.id)
        return await anyio.to_thread.run_sync(self._get, job.id)

    def _cancel_waiting(self, job_id: str) -> bool:
        with self._database.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_([JobStatus.CREATED, JobStatus.QUEUED]))
                .values(status=JobStatus.CANCELLED, completed_at=utcnow(), error="cancelled")
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            self._results.ended_in(session, job_id)
            return True

    def _request_cancel(self, job_id: str) -> bool:
        with self._database.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                .values(cancel_requested=True)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            publish_in(session, Topic.CANCEL, job_id)  # for the process that runs it
            return True

    async def delete(self, job: Job) -> None:
        """Stops the job if it runs, then removes its workspace, images and record."""
        await anyio.to_thread.run_sync(self._cancel_waiting, job.id)
        if await anyio.to_thread.run_sync(self._request_cancel, job.id):
            self._dispatcher.stop_job(job.id)
            await self._dispatcher.wait_for(job.id)
            await self._wait_until_ended(job.id)
        await anyio.to_thread.run_sync(self._remove, job.id)

    async def _wait_until_ended(self, job_id: str) -> None:
        with anyio.move_on_after(DELETE_WAIT):
            while self._status(job_id) in ACTIVE:
                await anyio.sleep(0.1)
        if self._status(job_id) in ACTIVE:
            raise Conflict(f"job {job_id} did not stop in time; try again")

    def _remove(self, job_id: str) -> None:
        self._workspaces.remove_workspace(job_id)
        self._images.remove(job_id)
        with self._database.session() as session:
            session.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
            row = session.get(Job, job_id)
            if row is not None:
                session.delete(row)

    def page(
        self,
        user: User,
        status: str | None,
        limit: int,
        cursor: str | None,
        owner: str | None,
        repository: str | None = None,
    ) -> JobPage:
        """Newest first: the caller's jobs, or `owner`'s (`*`: everyone's) for an admin."""
        if owner and owner != user.name and not user.admin:
            raise Forbidden("only members of ADMIN_GROUP may list other users' jobs")
        query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
        if owner != ALL_USERS:
            query = query.where(Job.user == (owner or user.name))
        if status:
            query = query.where(Job.status == status)
        if repository:
            query = query.where(Job.repository == repository)
        if cursor:
            created, job_id = _decode_cursor(cursor)
            query = query.where(
                (Job.created_at < created) | ((Job.created_at == created) & (Job.id < job_id))
            )
        with self._database.read() as session:
            jobs = list(session.scalars(query))
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return JobPage(jobs, _encode_cursor(jobs[-1]) if more else None)

    def events_page(self, job_id: str, seq: int, limit: int) -> list[JobEvent]:
        """At most `limit` events after `seq`, fewer when they are large: one page of a
        long transcript (see EventStore.after)."""
        return self._events.after(job_id, seq, limit)

    async def follow(self, job_id: str, after: int) -> AsyncIterator[JobEvent]:
        """The job's events after `after`, live, until the job has ended and all are sent.

        Woken at once by runs of this process, and by those of other processes on the
        same PostgreSQL through their notifications; at worst, news is noticed within
        `FOLLOW_POLL` seconds."""
        wake = self._broker.subscribe(job_id)
        try:
            while True:
                wake.clear()
                ended = self._status(job_id) not in ACTIVE | {JobStatus.CREATED}
                batch = await anyio.to_thread.run_sync(self._events.after, job_id, after)
                for event in batch:
                    after = event.seq
                    yield event
                if ended and not batch:
                    return
                if not batch:
                    with anyio.move_on_after(FOLLOW_POLL):
                        await wake.wait()
        finally:
            self._broker.unsubscribe(job_id, wake)

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

    def active_jobs_of(self, repo_id: str) -> int:
        """Queued or running jobs of the repository `repo_id`, whoever started them."""
        with self._database.read() as session:
            count = session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.repository_id == repo_id, Job.status.in_(list(ACTIVE)))
            )
        return count or 0

    def expire_workspaces(self, retention: timedelta) -> int:
        """Removes the workspaces of jobs that ended more than `retention` ago."""
        cutoff = utcnow() - retention
        with self._database.read() as session:
            ids = list(
                session.scalars(
                    select(Job.id).where(
                        Job.status.in_(list(ENDED)),
                        Job.completed_at < cutoff,
                        Job.workspace_removed.is_(False),
                    )
                )
            )
        for job_id in ids:
            self._workspaces.remove_workspace(job_id)
            self._images.remove(job_id)
            with self._database.session() as session:
                session.execute(update(Job).where(Job.id == job_id).values(workspace_removed=True))
        return len(ids)

    def restore_workspaces(self) -> int:
        """After a restart: makes every kept workspace usable again (overlays remounted)."""
        with self._database.read() as session:
            ids = list(
                session.scalars(
                    select(Job.id).where(Job.commit.is_not(None), Job.workspace_removed.is_(False))
                )
            )
        for job_id in ids:
            self._workspaces.restore_workspace(job_id)
        return len(ids)

    def _get(self, job_id: str) -> Job:
        job = self._find(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        return job

    def _find(self, job_id: str) -> Job | None:
        """By Core: read on every request that names a job, it needs no identity map."""
        with self._database.read_connection() as connection:
            row = connection.execute(_FIND, {"job_id": job_id}).first()
        return None if row is None else detached(Job, row)

    def _status(self, job_id: str) -> str:
        with self._database.read() as session:
            status = session.scalar(select(Job.status).where(Job.id == job_id))
        return status or "gone"


CURSOR_PATTERN = r"^[0-9]{1,20}-[0-9a-f]{32}$"  # microseconds since 1970, then the job id
_LATEST = datetime.max.replace(tzinfo=UTC)


def _encode_cursor(job: Job) -> str:
    return f"{int(job.created_at.timestamp() * 1_000_000)}-{job.id}"


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise BadRequest("invalid cursor")
    micros, job_id = cursor.split("-")
    try:
        return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), job_id
    except (OverflowError, ValueError, OSError):
        return _LATEST, job_id  # past any job: the first page

"""The lifecycle of a job: create, add images, start, cancel, resume, delete.

Statuses move only by the transitions of `status`, made in `transitions`; a start or a
resume is one transaction with its audit row, its queue position and, when this process
has a free slot, the claim that runs it at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio

from claude_batch_server.audit import Audit
from claude_batch_server.auth.service import User
from claude_batch_server.errors import BadRequest, Conflict
from claude_batch_server.jobs.dispatcher import Dispatcher
from claude_batch_server.jobs.images import MAX_IMAGES, ImageStore, safe_name
from claude_batch_server.jobs.queue import JobQueue
from claude_batch_server.jobs.reading import JobReader
from claude_batch_server.jobs.status import ACTIVE, JobStatus
from claude_batch_server.jobs.transitions import Enqueue, Transitions
from claude_batch_server.repositories.service import RepositoryService, RepoStatus
from claude_batch_server.repositories.validation import check_text
from claude_batch_server.results.service import ResultService
from claude_batch_server.store.db import Database
from claude_batch_server.store.notify import Topic, publish_in
from claude_batch_server.store.tables import Job, detached, utcnow
from claude_batch_server.workspaces.engine import WorkspaceEngine

DELETE_WAIT = 30.0  # seconds a DELETE waits for a job running elsewhere to stop


@dataclass(frozen=True)
class JobRequest:
    prompt: str
    repository: str  # a name of the caller's, or of `owner`'s (admins only)
    options: dict[str, Any]
    images: list[str] = field(default_factory=list)
    owner: str | None = None


class JobService:
    def __init__(
        self,
        database: Database,
        transitions: Transitions,
        queue: JobQueue,
        dispatcher: Dispatcher,
        reader: JobReader,
        images: ImageStore,
        workspaces: WorkspaceEngine,
        repositories: RepositoryService,
        results: ResultService,
    ) -> None:
        self._database = database
        self._transitions = transitions
        self._queue = queue
        self._dispatcher = dispatcher
        self._reader = reader
        self._images = images
        self._workspaces = workspaces
        self._repositories = repositories
        self._results = results

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
            self._transitions.create(session, job)
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
        with self._database.connection() as connection:
            if not self._transitions.add_images(connection, job.id, [n for n, _ in saved]):
                raise Conflict("images can be added only while the job is created")
        return saved

    def start(self, job: Job, audit: Audit | None = None) -> tuple[Job, int | None]:
        """The job, now queued, and its queue position."""
        missing = [name for name in job.expected_images if name not in job.images]
        if missing:
            raise Conflict(f"images named at creation are not uploaded: {', '.join(missing)}")
        return self._enqueue(job, self._transitions.start, job.prompt, audit)

    def resume(self, job: Job, prompt: str, audit: Audit | None = None) -> tuple[Job, int | None]:
        if job.workspace_removed:
            raise Conflict("the job's workspace has been removed")
        return self._enqueue(job, self._transitions.resume, check_text("prompt", prompt), audit)

    def _enqueue(
        self, job: Job, transition: Enqueue, prompt: str, audit: Audit | None
    ) -> tuple[Job, int | None]:
        """One transaction: the move to `queued`, its audit row, the queue position, and,
        when this process has a free slot, the claim of the next job (this one, unless
        others come first), which then starts without waiting for the dispatch loop."""
        with self._database.connection() as connection:
            claims = self._dispatcher.accepts()
            if claims:  # before the job's row is changed (JobQueue.lock_claims_in)
                self._queue.lock_claims_in(connection)
            row = transition(connection, job.id, prompt, utcnow())
            if row is None:
                raise Conflict(f"job {job.id} is {self._reader.status(job.id)}")
            position = self._queue.position_in(connection, row.queued_at)
            if audit is not None:
                audit.record_in(connection)
            claim, more = (None, True)
            if claims:
                claim, more = self._queue.claim_in(connection, locked=True)
            if more:  # for whichever process has a slot free
                publish_in(connection, Topic.QUEUE)
        if claim is not None:
            self._dispatcher.hand_over(claim)
        if more:
            self._dispatcher.wake()
        return detached(Job, row), position  # the job as queued: what the caller is told

    async def cancel(self, job: Job) -> Job:
        """Queued or created: cancelled at once. Running: stopped, and cancelled once its
        process group is gone."""
        if await anyio.to_thread.run_sync(self._cancel_waiting, job.id):
            return await anyio.to_thread.run_sync(self._reader.get, job.id)
        if not await anyio.to_thread.run_sync(self._request_cancel, job.id):
            raise Conflict(f"job {job.id} is {self._reader.status(job.id)}")
        self._dispatcher.stop_job(job.id)
        return await anyio.to_thread.run_sync(self._reader.get, job.id)

    def _cancel_waiting(self, job_id: str) -> bool:
        with self._database.connection() as connection:
            return self._transitions.cancel(connection, job_id, utcnow())

    def _request_cancel(self, job_id: str) -> bool:
        with self._database.connection() as connection:
            if not self._transitions.request_cancel(connection, job_id):
                return False
            publish_in(connection, Topic.CANCEL, job_id)  # for the process that runs it
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
            while self._reader.status(job_id) in ACTIVE:
                await anyio.sleep(0.1)
        if self._reader.status(job_id) in ACTIVE:
            raise Conflict(f"job {job_id} did not stop in time; try again")

    def _remove(self, job_id: str) -> None:
        self._workspaces.remove_workspace(job_id)
        self._images.remove(job_id)
        with self._database.connection() as connection:
            self._transitions.delete(connection, job_id)

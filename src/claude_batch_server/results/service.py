"""What a job's end sets going, and what its owner reads of it.

The end transition of a job (`ended_in`) writes, in its own transaction, the outbox rows
of what follows: the branch push, when the job completed with `options.branch`, and one
webhook delivery for WEBHOOK_URL and one for `options.webhook`. A worker in every server
takes the rows that are due (a push first: the webhooks carry its result), moving `next_at`
on as a lease, so a server that dies mid-way leaves its rows to the next one; a failed
delivery is due again after the next pause of `webhooks.PAUSES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy import Connection, Row, and_, exists, insert, or_, select, update
from sqlalchemy.orm import Session

from claude_batch_server import servergit
from claude_batch_server.accounts import Account
from claude_batch_server.errors import Conflict, NotFound, Unavailable
from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.logs import log
from claude_batch_server.results import branch as branches
from claude_batch_server.results import commit, webhooks
from claude_batch_server.servergit import GitError
from claude_batch_server.store.db import Database, after_commit
from claude_batch_server.store.tables import (
    DELIVERY_ATTEMPTS,
    JOBS,
    RESULT_TASKS,
    DeliveryAttempt,
    Job,
    Repository,
    detached,
    utcnow,
)
from claude_batch_server.workspaces.engine import WorkspaceEngine

PUSH, WEBHOOK, SERVER_WEBHOOK = "push", "webhook", "server"
PENDING, DONE, FAILED = "pending", "done", "failed"
POLL = 1.0  # seconds between looks for due rows (rows of this server's jobs wake it at once)
IN_FLIGHT = 16  # pushes and deliveries under way at once in one server
PUSHES = 4  # of which pushes (each a thread, for up to the push's timeout)
LEASES = {PUSH: timedelta(seconds=commit.PUSH_TIMEOUT + 6 * servergit.TIMEOUT)}
DELIVERY_LEASE = timedelta(seconds=60)
PUSH_TRIES = 3  # takes of one push, when its server died under the earlier ones
MAX_DELIVERIES = 1000  # attempts listed for one job

Render = Callable[[Job], dict[str, Any]]

_OTHER = RESULT_TASKS.alias("other")
_PUSH_PENDING = exists().where(
    _OTHER.c.job_id == RESULT_TASKS.c.job_id,
    _OTHER.c.kind == PUSH,
    _OTHER.c.state == PENDING,
)


class ResultService:
    def __init__(
        self,
        database: Database,
        workspaces: WorkspaceEngine,
        lookup: Callable[[str], Account | None],
        webhook_url: str,
        webhook_secret: str,
        allowed_hosts: list[str],
    ) -> None:
        self._database = database
        self._workspaces = workspaces
        self._lookup = lookup
        self._webhook_url = webhook_url
        self._secret = webhook_secret
        self._allowed_hosts = allowed_hosts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ at POST /jobs

    def checked_options(
        self, job_id: str, repository: Repository, options: dict[str, Any]
    ) -> dict[str, Any]:
        """The options with `branch` resolved to a name; 400 for a branch or webhook that
        may not be used, before anything runs."""
        options = dict(options)
        if "branch" in options:
            name = branches.checked(options["branch"], job_id, repository.branch)
            if name is None:
                del options["branch"]
            else:
                options["branch"] = name
        if options.get("webhook") is not None:
            webhooks.checked_url(options["webhook"], self._allowed_hosts)
        return options

    # ------------------------------------------------------------------ at a job's end

    def ended_in(self, unit: Connection | Session, job_id: str) -> None:
        """In the transaction that ends the job: the push and deliveries its end asks for."""
        row = unit.execute(
            select(JOBS.c.status, JOBS.c.options, JOBS.c.result).where(JOBS.c.id == job_id)
        ).first()
        if row is None:
            return
        tasks = []
        branch = row.options.get("branch")
        if branch:
            tasks += self._branch_end(unit, job_id, branch, row.status, row.result or {})
        own = row.options.get("webhook")
        if own and not webhooks.allowed(own, self._allowed_hosts):
            own = None  # WEBHOOK_ALLOWED_HOSTS lost its host since the job was created
        for kind, url in ((SERVER_WEBHOOK, self._webhook_url), (WEBHOOK, own)):
            if url:
                tasks.append(_task(job_id, kind, url))
        if tasks:
            unit.execute(insert(RESULT_TASKS), tasks)
            after_commit(unit, self.wake)

    def _branch_end(
        self,
        unit: Connection | Session,
        job_id: str,
        branch: str,
        status: str,
        previous: dict[str, Any],
    ) -> list[dict[str, Any]]:
        # a resumed job's push builds on what its last push sent, so it is a fast-forward
        base = (
            previous.get("commit")
            if previous.get("pushed") and previous.get("branch") == branch
            else None
        )
        if status == JobStatus.COMPLETED:
            result: dict[str, Any] | None = _result(branch)  # pending: neither pushed nor error
            tasks = [_task(job_id, PUSH, branch, base)]
        else:
            result = (
                None
                if base
                else _result(branch, error=f"the job ended {status}: nothing was pushed")
            )
            tasks = []
        if result is not None:
            unit.execute(update(JOBS).where(JOBS.c.id == job_id).values(result=result))
        return tasks

    def wake(self) -> None:
        """Thread-safe: due rows are looked for now rather than at the next poll."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
                self._loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------------ for the job's owner

    def patch(self, job: Job) -> bytes:
        """The job's changes as one commit of its user, on its start commit, in mbox form."""
        if job.commit is None:
            raise NotFound("the job has no workspace yet")
        if job.workspace_removed:
            raise NotFound("the job's workspace has been removed")
        account = self._lookup(job.user)
        if account is None:
            raise NotFound(f"account {job.user!r} no longer exists")
        start = self._workspaces.start_of(job.id)
        if start is None:
            raise Conflict("the stored repository the job started from is gone")
        workspace = self._workspaces.workspace_path(job.id)
        try:
            with commit.scratch(account, workspace, start) as repository:
                made = repository.snapshot(
                    start.commit,
                    repository.ident(),
                    job.completed_at or utcnow(),
                    commit.message_of(job.prompt, job.id),
                )
                if made is None:
                    raise Conflict("the job changed no file: there is no patch")
                return repository.format_patch(made)
        except GitError as error:
            raise Unavailable(f"git failed: {error}") from error

    def deliveries(self, job: Job) -> list[DeliveryAttempt]:
        query = (
            select(DELIVERY_ATTEMPTS)
            .where(DELIVERY_ATTEMPTS.c.job_id == job.id)
            .order_by(DELIVERY_ATTEMPTS.c.id)
            .limit(MAX_DELIVERIES)
        )
        with self._database.read_connection() as connection:
            return [detached(DeliveryAttempt, row) for row in connection.execute(query)]

    # ------------------------------------------------------------------ the worker

    async def run(self, render: Render) -> None:
        """Until cancelled: takes the due rows and carries them out, a few at a time."""
        self._loop = asyncio.get_running_loop()
        sender = webhooks.Sender(self._secret)
        pushes = anyio.CapacityLimiter(PUSHES)
        busy = 0

        async def carry_out(task: Row[Any]) -> None:
            nonlocal busy
            try:
                if task.kind == PUSH:  # threads of their own: the API's stay free
                    await anyio.to_thread.run_sync(self._push, task, limiter=pushes)
                else:
                    await self._deliver(task, sender, render)
            except Exception:  # the row stays leased: it is tried again when the lease ends
                log.exception("result task failed", job=task.job_id, kind=task.kind)
            finally:
                busy -= 1
                self.wake()

        try:
            async with anyio.create_task_group() as group:
                while True:
                    self._wake.clear()
                    due: list[Row[Any]] = []
                    if busy < IN_FLIGHT:
                        try:
                            due = await anyio.to_thread.run_sync(self._claim, IN_FLIGHT - busy)
                        except Exception:  # the database may be away a moment
                            log.exception("claiming result tasks failed")
                    for task in due:
                        busy += 1
                        group.start_soon(carry_out, task)
                    with anyio.move_on_after(POLL):
                        await self._wake.wait()
        finally:
            with contextlib.suppress(Exception):
                await sender.close()

    def _claim(self, room: int) -> list[Row[Any]]:
        now = utcnow()
        due = (
            select(RESULT_TASKS)
            .where(
                RESULT_TASKS.c.state == PENDING,
                RESULT_TASKS.c.next_at <= now,
                or_(RESULT_TASKS.c.kind == PUSH, ~_PUSH_PENDING),
            )
            .order_by(RESULT_TASKS.c.next_at)
            .limit(room)
        )
        claimed = []
        with self._database.connection() as connection:
            for task in connection.execute(due).all():
                lease = now + LEASES.get(task.kind, DELIVERY_LEASE)
                # a push counts its tries as it is taken: one that kills its server each
                # time is given up (a delivery counts the attempts it records)
                tries = RESULT_TASKS.c.attempts + (1 if task.kind == PUSH else 0)
                taken = connection.execute(
                    update(RESULT_TASKS)
                    .where(
                        and_(
                            RESULT_TASKS.c.id == task.id,
                            RESULT_TASKS.c.state == PENDING,
                            RESULT_TASKS.c.next_at == task.next_at,
                        )
                    )
                    .values(next_at=lease, attempts=tries)
                )
                if taken.rowcount:
                    claimed.append(task)
        return claimed

    # ------------------------------------------------------------------ a push

    def _push(self, task: Row[Any]) -> None:
        """Blocking: commits the job's workspace as its user and pushes it; the outcome
        goes to the job's `result`, a failure included (the job stays completed)."""
        with self._database.read() as session:
            job = session.get(Job, task.job_id)
            repository = None if job is None else session.get(Repository, job.repository_id)
        if job is not None:
            try:
                if task.attempts >= PUSH_TRIES:
                    raise GitError(f"the push was tried {PUSH_TRIES} times and never finished")
                result = self._pushed(job, repository, task.target, task.base)
            except (GitError, OSError) as error:
                result = _result(task.target, error=str(error) or type(error).__name__)
        with self._database.connection() as connection:
            if job is not None:
                connection.execute(update(JOBS).where(JOBS.c.id == job.id).values(result=result))
            connection.execute(
                update(RESULT_TASKS).where(RESULT_TASKS.c.id == task.id).values(state=DONE)
            )

    def _pushed(
        self, job: Job, repository: Repository | None, branch: str, base: str | None
    ) -> dict[str, Any]:
        account = self._lookup(job.user)
        if account is None or repository is None or job.commit is None or job.workspace_removed:
            what = (
                "account"
                if account is None
                else "repository"
                if repository is None
                else "workspace"
            )
            return _result(branch, error=f"the job's {what} is gone: nothing was pushed")
        start = self._workspaces.start_of(job.id)
        if start is None:
            return _result(branch, error="the job's stored repository is gone: nothing was pushed")
        workspace = self._workspaces.workspace_path(job.id)
        with commit.scratch(account, workspace, start) as scratch:
            made = scratch.snapshot(
                base or start.commit,
                scratch.ident(),
                job.completed_at or utcnow(),
                commit.message_of(job.run_prompt, job.id),
            )
            if made is None and base is None:
                return _result(branch, error="the job changed no file: nothing was pushed")
            pushed = made or base
            assert pushed is not None
            if made is not None:
                try:
                    scratch.push(repository.git_url, made, branch)
                except GitError as error:
                    return _result(branch, pushed, error=_push_error(str(error)))
        link = branches.pull_request_url(repository.git_url, branch, repository.branch)
        return _result(branch, pushed, pushed=True) | ({"pullRequestUrl": link} if link else {})

    # ------------------------------------------------------------------ a webhook

    async def _deliver(self, task: Row[Any], sender: webhooks.Sender, render: Render) -> None:
        body = task.body
        if body is None:  # the first attempt fixes what every retry sends
            job = await anyio.to_thread.run_sync(self._job, task.job_id)
            if job is None:
                return
            body = webhooks.body_of(render(job), job.completed_at)
        outcome = await sender.send(task.target, task.message_id, body)
        await anyio.to_thread.run_sync(self._record, task, body, outcome)

    def _job(self, job_id: str) -> Job | None:
        with self._database.read() as session:
            return session.get(Job, job_id)

    def _record(self, task: Row[Any], body: str, outcome: webhooks.Outcome) -> None:
        attempt = task.attempts + 1
        now = utcnow()
        if outcome.delivered:
            state, next_at = DONE, now
        elif attempt > len(webhooks.PAUSES):
            state, next_at = FAILED, now
        else:
            state, next_at = PENDING, now + webhooks.PAUSES[attempt - 1]
        shown, error = task.target, outcome.error
        if task.kind == SERVER_WEBHOOK:  # its path may hold a token: users see the origin
            shown = webhooks.shown_url(task.target)
            error = error and error.replace(task.target, shown)
        with self._database.connection() as connection:
            connection.execute(
                insert(DELIVERY_ATTEMPTS).values(
                    job_id=task.job_id,
                    time=now,
                    url=shown,
                    status=outcome.status,
                    attempt=attempt,
                    error=error,
                )
            )
            connection.execute(
                update(RESULT_TASKS)
                .where(RESULT_TASKS.c.id == task.id)
                .values(body=body, attempts=attempt, state=state, next_at=next_at)
            )
        if not outcome.delivered:
            log.info("webhook not delivered", job=task.job_id, attempt=attempt, state=state)


def _task(job_id: str, kind: str, target: str, base: str | None = None) -> dict[str, Any]:
    now = utcnow()
    return {
        "job_id": job_id,
        "kind": kind,
        "target": target,
        "base": base,
        "message_id": f"msg_{secrets.token_hex(16)}",
        "body": None,
        "attempts": 0,
        "state": PENDING,
        "next_at": now,
        "created_at": now,
    }


def _result(
    branch: str, commit_id: str | None = None, *, pushed: bool = False, error: str | None = None
) -> dict[str, Any]:
    return {"branch": branch, "commit": commit_id, "pushed": pushed, "error": error}


def _push_error(message: str) -> str:
    """git's own words, without its hints: why the push was refused."""
    lines = [line for line in message.splitlines() if not line.startswith("hint:")]
    text = "\n".join(lines).strip()
    if "[rejected]" in text or "non-fast-forward" in text or "fetch first" in text:
        return f"the branch exists with other commits (not a fast-forward; never forced): {text}"
    return text or "git push failed"

"""One run of a claimed job: its workspace, Claude Code as the user, the transcript as it
arrives, and how the run ended."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import BindParameter, ColumnElement, Connection, bindparam, func, select, update

from claude_batch_server.accounts import Account
from claude_batch_server.cgroups.base import Usage
from claude_batch_server.files.safe import write_beneath
from claude_batch_server.jobs import command
from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.executors.base import Executor, PreparedRun, Run
from claude_batch_server.jobs.images import ImageStore, media_type
from claude_batch_server.jobs.lines import Line
from claude_batch_server.jobs.outcome import Outcome, RunEnd, decide
from claude_batch_server.jobs.queue import Claim
from claude_batch_server.jobs.recorder import OutputBudget, TranscriptRecorder
from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.jobs.transcript import (
    Event,
    RunResult,
    parse_stdout,
    server_event,
    stderr_event,
)
from claude_batch_server.logs import log
from claude_batch_server.metrics import Metrics
from claude_batch_server.results.service import ResultService
from claude_batch_server.store.db import Database
from claude_batch_server.store.notify import Topic, publish_in
from claude_batch_server.store.tables import JOBS, Job, utcnow
from claude_batch_server.workspaces.engine import WorkspaceEngine

IMAGE_DIR = ".claude-batch/images"
PIPE_DRAIN = 5.0  # seconds to finish reading output after the process group is gone
STDERR_TAIL = 20
STDERR_LINE = 4000  # bytes of one stderr line kept for the error


class StopRequest:
    """Asks a run to stop early: a user's cancel, the server shutting down, a limit."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason = RunEnd.CANCELLED

    def set(self, reason: RunEnd) -> None:
        self.reason = reason
        self.event.set()


MEGABYTE = 1024 * 1024


class JobRunner:
    def __init__(
        self,
        database: Database,
        workspaces: WorkspaceEngine,
        images: ImageStore,
        events: EventStore,
        broker: Broker,
        lookup: Callable[[str], Account | None],
        claude_command: str,
        max_run: timedelta,
        executor: Executor,
        metrics: Metrics,
        owner: str,
        output_max_mb: int,
        results: ResultService,
    ) -> None:
        self._database = database
        self._workspaces = workspaces
        self._images = images
        self._events = events
        self._broker = broker
        self._lookup = lookup
        self._claude_command = claude_command
        self._max_run = max_run
        self.executor = executor
        self._metrics = metrics
        self._owner = owner  # the lease owner that this process's runs are claimed under
        self._output_max_mb = output_max_mb
        self._results = results  # what a job's end sets going: its push, its webhooks

    async def run(self, claim: Claim, stop: StopRequest) -> JobStatus:
        """Runs the claimed job's pending run to its end and records it; returns the final
        status."""
        job, result = claim.job, RunResult()
        try:
            outcome = await self._run(claim, stop, result)
        except Exception as error:  # any failure of ours must still end the job
            log.exception("job run failed", job=job.id)
            outcome = Outcome(JobStatus.FAILED, None, f"server error: {error}")
            # a run that failed before its process was recorded has no start mark yet
            first = None if result.recorded else _run_started(job, self._timeout(job))
            await anyio.to_thread.run_sync(self.finish, job.id, outcome, result, first)
            return outcome.status
        self._ended(job.id, outcome, job.claimed_at)
        return outcome.status

    async def _run(self, claim: Claim, stop: StopRequest, result: RunResult) -> Outcome:
        """The run, ended and recorded (the end in the transcript's last transaction)."""
        began, job = time.perf_counter(), claim.job
        timeout = self._timeout(job)
        prepared = await anyio.to_thread.run_sync(self._prepare, job, claim.repository_commit)
        if isinstance(prepared, Outcome):
            started = _run_started(job, timeout)
            await anyio.to_thread.run_sync(self._finish, job.id, prepared, result, started)
            return prepared
        prepared_run, commit = prepared
        spawned = time.perf_counter()
        process = await self.executor.start(prepared_run)
        log.info(
            "agent started",
            job=job.id,
            pid=process.pid,
            prepare_ms=round((spawned - began) * 1000, 1),
            spawn_ms=round((time.perf_counter() - spawned) * 1000, 1),
        )
        first = functools.partial(self._record_start, job.id, process, commit, timeout, job)
        kept = await anyio.to_thread.run_sync(self._events.size, job.id) if job.runs else 0
        budget = OutputBudget(
            self._output_max_mb * MEGABYTE - kept, functools.partial(stop.set, RunEnd.OUTPUT_LIMIT)
        )
        recorder = TranscriptRecorder(
            self._database,
            self._events,
            self._broker,
            job.id,
            first,
            functools.partial(stop.set, RunEnd.TRANSCRIPT),
            budget,
            claim.last_seq,
        )
        try:
            ended = await self._follow(process, recorder, stop, timeout, result, job)
            outcome = decide(
                ended,
                process.poll(),
                result,
                timeout,
                self.executor.memory_max,
                self._output_max_mb,
            )
            await recorder.close(functools.partial(self._finish_in, job.id, outcome, result))
        except Exception:
            await recorder.close()
            raise
        finally:
            result.recorded = recorder.started
        return outcome

    async def _follow(
        self,
        process: Run,
        recorder: TranscriptRecorder,
        stop: StopRequest,
        timeout: float,
        result: RunResult,
        job: Job,
    ) -> RunEnd:
        """Records the run's output until it ended, and what it used; returns how it ended.
        Whatever happens, the run is ended (`Run.end`) before this returns: whoever sees the
        job ended finds nothing of its run left."""
        readers = asyncio.gather(
            _pump(
                process.stdout(), recorder, functools.partial(parse_stdout, result=result), result
            ),
            _pump(process.stderr(), recorder, stderr_event, None, keep=result.stderr_tail),
        )
        live = functools.partial(self._record_usage, job)
        watch = asyncio.create_task(process.watch(live, functools.partial(stop.set, RunEnd.OOM)))
        try:
            ended = await self._supervise(process, stop, timeout)
        finally:
            watch.cancel()
            used = await process.end()
        self._metrics.run_resources(
            self.executor.measures, used.cpu_seconds, used.memory_peak_bytes
        )
        result.cpu_seconds, result.memory_peak_bytes = _totals(job, used)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(readers, PIPE_DRAIN)
        if used.oom_kills and ended is RunEnd.EXITED:  # killed before the watch saw it
            return RunEnd.OOM
        return ended

    def _record_usage(self, job: Job, used: Usage) -> None:
        """Blocking: a running job's figures so far (its runs before this one included)."""
        cpu, peak = _totals(job, used)
        params = {"job_id": job.id, "owner": self._owner, "cpu": cpu, "peak": peak}
        with self._database.connection() as connection:
            connection.execute(_LIVE_USAGE, params)

    def _prepare(
        self, job: Job, repository_commit: str | None
    ) -> tuple[PreparedRun, str | None] | Outcome:
        """Blocking: the workspace (made on the first run, at `repository_commit`, where the
        claim found the repository; restored on a resume), the command line of this run, and
        the commit of a new workspace."""
        account = self._lookup(job.user)
        if account is None:
            return Outcome(JobStatus.FAILED, None, f"account {job.user!r} no longer exists")
        first = job.commit is None  # no workspace yet: this run makes it, with the images
        commit = None
        if first:
            if repository_commit is None:
                raise RuntimeError(f"repository {job.repository!r} is not ready")
            commit = repository_commit  # the engine makes it at this commit or not at all
            path = self._create_workspace(job, account, commit)
        else:
            self._workspaces.restore_workspace(job.id)
            path = self._workspaces.workspace_path(job.id)
        images = [self._image(job.id, name) for name in job.images] if first else []
        session = None if first else job.session_id
        line = command.arguments(self._claude_command, job.options, session, bool(images))
        stdin = command.stdin(job.run_prompt, images, IMAGE_DIR if images else None)
        env = command.environment(account)
        timeout = self._timeout(job)
        run = PreparedRun(job.id, account, line.argv, env, path, stdin, timeout, line.files)
        return run, commit

    def _create_workspace(self, job: Job, account: Account, commit: str) -> Path:
        started = time.perf_counter()
        path = self._workspaces.create_workspace(job.repository_id, commit, job.id, account)
        self._metrics.workspace_seconds.labels(self._workspaces.strategy_name).observe(
            time.perf_counter() - started
        )
        owner = (account.uid, account.gid)
        for name in job.images:
            data = self._images.read(job.id, name)
            write_beneath(path, f"{IMAGE_DIR}/{name}", data, owner)
        if job.images:
            write_beneath(path, ".git/info/exclude", b"\n/.claude-batch/\n", owner, append=True)
        return path

    def _image(self, job_id: str, name: str) -> command.Image:
        data = self._images.read(job_id, name)
        return command.Image(name, media_type(data[:16]) or "image/png", data)

    def _timeout(self, job: Job) -> float:
        limit = self._max_run.total_seconds()
        asked = job.options.get("timeout")
        return min(float(asked), limit) if asked else limit

    async def _supervise(self, process: Run, stop: StopRequest, timeout: float) -> RunEnd:
        """Waits for the run to exit, to be asked to stop, or its time to run out."""
        exited = asyncio.create_task(process.wait())
        cancelled = asyncio.create_task(stop.event.wait())
        try:
            done, _ = await asyncio.wait(
                {exited, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled.cancel()
        if exited in done:
            return RunEnd.EXITED
        await process.stop()
        return stop.reason if cancelled in done else RunEnd.TIMEOUT

    def _record_start(
        self,
        job_id: str,
        process: Run,
        commit: str | None,
        timeout: float,
        job: Job,
        connection: Connection,
        session_id: str | None,
    ) -> list[Event]:
        """In the run's first transaction: the process (for a successor after a crash), the
        workspace's commit on a first run, the deadline, the session id if known; returns
        the mark of the run's start, to be stored before its first lines."""
        params = {
            "job_id": job_id,
            "new_pid": process.pid,
            "new_pid_start": process.pid_start,
            "new_deadline": utcnow() + timedelta(seconds=timeout),
            "new_commit": commit,
            "new_session_id": session_id,
        }
        connection.execute(_RECORD_START, params)
        return [_run_started(job, timeout)]

    def finish(
        self, job_id: str, outcome: Outcome, result: RunResult, started: Event | None = None
    ) -> None:
        """Blocking: records how a run ended, in the job and in its transcript (after the
        `started` mark, if that was not written yet)."""
        with self._database.read_connection() as connection:
            claimed = connection.scalar(_CLAIMED_AT, {"job_id": job_id})
        self._finish(job_id, outcome, result, started)
        self._ended(job_id, outcome, claimed)

    def _finish(
        self, job_id: str, outcome: Outcome, result: RunResult, started: Event | None
    ) -> None:
        with self._database.connection() as connection:
            marks = self._finish_in(job_id, outcome, result, connection, started)
            self._events.append_in(connection, job_id, marks)

    def _finish_in(
        self,
        job_id: str,
        outcome: Outcome,
        result: RunResult,
        connection: Connection,
        started: Event | None = None,
    ) -> list[Event]:
        """Records the run's end in the job, in the transaction of `connection`; returns the
        marks to store with it in the transcript (none if the job is no longer ours)."""
        ended = server_event(
            "run.ended",
            status=outcome.status.value,
            exitCode=outcome.exit_code,
            error=outcome.error,
        )
        params = _finish_params(job_id, outcome, result) | {"owner": self._owner}
        if connection.scalar(_FINISH, params) is None:  # deleted while it ran, or not ours
            return []
        self._results.ended_in(connection, job_id)
        publish_in(connection, Topic.QUEUE)  # its slot is free, for any process to fill
        return [ended] if started is None else [started, ended]

    def _ended(self, job_id: str, outcome: Outcome, claimed: datetime | None) -> None:
        seconds = (utcnow() - claimed).total_seconds() if claimed else None
        self._metrics.job_ended(outcome.status.value, seconds)
        self._broker.publish(job_id)


async def _pump(
    lines: AsyncIterator[Line],
    recorder: TranscriptRecorder,
    to_event: Callable[..., Event],
    result: RunResult | None,
    keep: list[str] | None = None,
) -> None:
    async for line in lines:
        event = to_event(line.data, dropped=line.dropped)
        if keep is not None:
            keep.append(line.data[:STDERR_LINE].decode("utf-8", "replace").strip())
            del keep[:-STDERR_TAIL]
        await recorder.add(event, result.session_id if result is not None else None)


def _run_started(job: Job, timeout: float) -> Event:
    return server_event("run.started", run=job.runs + 1, resume=job.runs > 0, timeout=timeout)


def _finish_params(job_id: str, outcome: Outcome, result: RunResult) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "new_status": outcome.status.value,
        "new_exit_code": outcome.exit_code,
        "new_error": outcome.error,
        "new_output": result.output,
        "new_session_id": result.session_id or None,
        "turns": result.num_turns,
        "cost": result.cost_usd,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "cpu_seconds": result.cpu_seconds,
        "memory_peak": result.memory_peak_bytes,
        "now": utcnow(),
    }


def _totals(job: Job, used: Usage) -> tuple[float, int]:
    """The job's CPU time over all its runs, and the highest peak of memory of any run."""
    return job.cpu_seconds + used.cpu_seconds, max(job.memory_peak_bytes, used.memory_peak_bytes)


def _param(name: str, column: str) -> BindParameter[Any]:
    return bindparam(name, type_=JOBS.c[column].type)


def _given_or_kept(name: str, column: str) -> ColumnElement[Any]:
    """The parameter `name` for `column`, or the column as it is when the parameter is NULL."""
    return func.coalesce(_param(name, column), JOBS.c[column])


# Built once: constructing a statement costs more than running it. A run's figures add up
# over its job's runs; output and session id stay as they were when a run reports none.
_THIS_JOB = JOBS.c.id == bindparam("job_id")
_CLAIMED_AT = select(JOBS.c.claimed_at).where(_THIS_JOB)
_RECORD_START = (
    update(JOBS)
    .where(_THIS_JOB)
    .values(
        pid=_param("new_pid", "pid"),
        pid_start=_param("new_pid_start", "pid_start"),
        deadline=_param("new_deadline", "deadline"),
        commit=_given_or_kept("new_commit", "commit"),
        session_id=_given_or_kept("new_session_id", "session_id"),
    )
)
# only a run of ours: after a takeover, the job is the new owner's
_OUR_RUN = (_THIS_JOB, JOBS.c.status == JobStatus.RUNNING, JOBS.c.lease_owner == bindparam("owner"))
_LIVE_USAGE = (
    update(JOBS)
    .where(*_OUR_RUN)
    .values(
        cpu_seconds=_param("cpu", "cpu_seconds"),
        memory_peak_bytes=_param("peak", "memory_peak_bytes"),
    )
)
_FINISH = (
    update(JOBS)
    .where(*_OUR_RUN)
    .values(
        status=_param("new_status", "status"),
        exit_code=_param("new_exit_code", "exit_code"),
        error=_param("new_error", "error"),
        output=_given_or_kept("new_output", "output"),
        session_id=_given_or_kept("new_session_id", "session_id"),
        num_turns=JOBS.c.num_turns + _param("turns", "num_turns"),
        cost_usd=JOBS.c.cost_usd + _param("cost", "cost_usd"),
        input_tokens=JOBS.c.input_tokens + _param("input_tokens", "input_tokens"),
        output_tokens=JOBS.c.output_tokens + _param("output_tokens", "output_tokens"),
        cpu_seconds=_given_or_kept("cpu_seconds", "cpu_seconds"),
        memory_peak_bytes=_given_or_kept("memory_peak", "memory_peak_bytes"),
        completed_at=_param("now", "completed_at"),
        runs=JOBS.c.runs + 1,
        cancel_requested=False,
        lease_owner=None,
        lease_expires=None,
        pid=None,
        pid_start=None,
        deadline=None,
    )
    .returning(JOBS.c.id)
)

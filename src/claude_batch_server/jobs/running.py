"""One run of a claimed job, start to end:

    prepare (preparation: workspace, command) ─> executor.start ─> Run
    Run's stdout/stderr ─> transcript events ─> recorder (its first transaction: the start)
    wait for: exit │ stop asked (cancel, shutdown, OOM, output or disk limit) │ timeout
    Run.end ─> what it used ─> outcome.decide ─> journal.finish_in, with the recorder's
                                                  last transaction (transition `finish`)

Any failure of ours still ends the job (`failed`, "server error: …"), in a transaction of
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable

import anyio

from claude_batch_server.jobs.executors.base import Executor, Run
from claude_batch_server.jobs.journal import RunJournal, started_mark, totals
from claude_batch_server.jobs.lines import Line
from claude_batch_server.jobs.outcome import Outcome, RunEnd, decide
from claude_batch_server.jobs.preparation import CannotRun, RunPreparer
from claude_batch_server.jobs.queue import Claim
from claude_batch_server.jobs.recorder import TranscriptRecorder
from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.jobs.transcript import Event, RunResult, parse_stdout, stderr_event
from claude_batch_server.logs import log
from claude_batch_server.metrics import Metrics
from claude_batch_server.store.tables import Job

PIPE_DRAIN = 5.0  # seconds to finish reading output after the run is gone
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


class JobRunner:
    def __init__(
        self, preparer: RunPreparer, executor: Executor, journal: RunJournal, metrics: Metrics
    ) -> None:
        self._preparer = preparer
        self.executor = executor
        self.journal = journal
        self._metrics = metrics

    async def run(self, claim: Claim, stop: StopRequest) -> JobStatus:
        """Runs the claimed job's pending run to its end and records it; returns the final
        status."""
        job, result = claim.job, RunResult()
        try:
            outcome = await self._run(claim, stop, result)
        except CannotRun as error:
            return await self._fail(job, result, str(error))
        except Exception as error:  # any failure of ours must still end the job
            log.exception("job run failed", job=job.id)
            return await self._fail(job, result, f"server error: {error}")
        self.journal.ended(job.id, outcome, job.claimed_at)
        return outcome.status

    async def _fail(self, job: Job, result: RunResult, error: str) -> JobStatus:
        outcome = Outcome(JobStatus.FAILED, None, error)
        # a run that failed before its start was recorded has no start mark yet
        first = None if result.recorded else started_mark(job, self._preparer.timeout(job))
        await anyio.to_thread.run_sync(self.journal.finish, job, outcome, result, first)
        return outcome.status

    async def _run(self, claim: Claim, stop: StopRequest, result: RunResult) -> Outcome:
        """The run, ended and recorded (the end in the transcript's last transaction)."""
        began, job = time.perf_counter(), claim.job
        prepared = await anyio.to_thread.run_sync(
            self._preparer.prepare, job, claim.repository_commit
        )
        spawned = time.perf_counter()
        run = await self.executor.start(prepared.run)
        log.info(
            "agent started",
            job=job.id,
            pid=run.pid,
            prepare_ms=round((spawned - began) * 1000, 1),
            spawn_ms=round((time.perf_counter() - spawned) * 1000, 1),
        )
        timeout = prepared.run.timeout
        try:
            recorder = await self.journal.recorder(
                job,
                run,
                prepared.commit,
                timeout,
                claim.last_seq,
                on_failure=functools.partial(stop.set, RunEnd.TRANSCRIPT),
                on_output_limit=functools.partial(stop.set, RunEnd.OUTPUT_LIMIT),
            )
        except BaseException:
            await run.end()
            raise
        try:
            ended = await self._follow(run, recorder, stop, timeout, result, job)
            outcome = decide(
                ended,
                run.poll(),
                result,
                timeout,
                self.executor.memory_max,
                self.journal.output_max_mb,
            )
            outcome = await run.amend(outcome, ended)
            await recorder.close(functools.partial(self.journal.finish_in, job.id, outcome, result))
        except Exception:
            await recorder.close()
            raise
        finally:
            result.recorded = recorder.started
        return outcome

    async def _follow(
        self,
        run: Run,
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
            _pump(run.stdout(), recorder, functools.partial(parse_stdout, result=result), result),
            _pump(run.stderr(), recorder, stderr_event, None, keep=result.stderr_tail),
        )
        live = functools.partial(self.journal.record_usage, job)
        watch = asyncio.create_task(run.watch(live, functools.partial(stop.set, RunEnd.OOM)))
        try:
            ended = await _supervise(run, stop, timeout)
        finally:
            watch.cancel()
            used = await run.end()
        self._metrics.run_resources(
            self.executor.measures, used.cpu_seconds, used.memory_peak_bytes
        )
        result.cpu_seconds, result.memory_peak_bytes = totals(job, used)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(readers, PIPE_DRAIN)
        if used.oom_kills and ended is RunEnd.EXITED:  # killed before the watch saw it
            return RunEnd.OOM
        return ended


async def _supervise(run: Run, stop: StopRequest, timeout: float) -> RunEnd:
    """Waits for the run to exit, to be asked to stop, or its time to run out."""
    exited = asyncio.create_task(run.wait())
    stopped = asyncio.create_task(stop.event.wait())
    try:
        done, _ = await asyncio.wait(
            {exited, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopped.cancel()
    if exited in done:
        return RunEnd.EXITED
    await run.stop()
    return stop.reason if stopped in done else RunEnd.TIMEOUT


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

"""The dispatcher, one per server process: it claims queued jobs as soon as a slot frees,
runs them, keeps their leases alive, and ends the jobs a dead dispatcher left behind.

Dispatch is event driven. A start (or resume) that finds a slot free claims in its own
transaction and hands the claim over; otherwise it wakes the dispatcher, as does a run's
end while jobs wait. Other processes on the same PostgreSQL database wake it through
notifications (store/notify.py): a job queued there while that process was full, a run's
end there, a cancel of a job that runs here. A tick every `TICK` seconds renews leases and
notices what those may have missed, and a lapsed lease.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio

from claude_batch_server.jobs.disk import GUARD_TICK, DiskGuard
from claude_batch_server.jobs.outcome import SERVER_GONE, Outcome, RunEnd
from claude_batch_server.jobs.queue import Claim, JobQueue
from claude_batch_server.jobs.running import JobRunner, StopRequest
from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.jobs.transcript import RunResult
from claude_batch_server.logs import log

TICK = 2.0


class Dispatcher:
    def __init__(self, queue: JobQueue, runner: JobRunner, guard: DiskGuard) -> None:
        self._queue = queue
        self._runner = runner
        self._guard = guard
        self._wake = asyncio.Event()
        self._running: dict[str, tuple[asyncio.Task[JobStatus], StopRequest]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._checks: set[asyncio.Task[None]] = set()  # cancels noticed, being looked up
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        # whether jobs may be waiting, as far as this process can know: else a run's end
        # claims nothing, and on a database shared with other processes it looks first
        self._waiting = True

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loops = [
            asyncio.create_task(self._dispatch_loop(), name="dispatch"),
            asyncio.create_task(self._tick_loop(), name="dispatch-tick"),
            asyncio.create_task(self._guard_loop(), name="disk-guard"),
        ]
        self.wake()

    def accepts(self) -> bool:
        """Whether a job claimed now would start at once; callable from any thread."""
        return self._loop is not None and not self._closing and self._has_slot()

    def hand_over(self, claim: Claim) -> None:
        """Runs a job that was claimed outside the dispatch loop (by a start that found a
        free slot, in its own transaction); callable from any thread."""
        assert self._loop is not None, "claims are handed over only when accepted"
        self._loop.call_soon_threadsafe(self._launch, claim)

    def wake(self) -> None:
        """Claims at once what may start; callable from any thread (the routes run in
        worker threads, and an asyncio.Event set there would wake nobody)."""
        if self._loop is not None:  # else not started yet, and start() wakes itself
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop_job(self, job_id: str, reason: RunEnd = RunEnd.CANCELLED) -> bool:
        """Asks a run of this process to stop; False when it does not run here."""
        entry = self._running.get(job_id)
        if entry is None:
            return False
        entry[1].set(reason)
        return True

    def cancel_noticed(self, job_id: str) -> None:
        """Someone asked, perhaps through another process, to cancel `job_id`: if it runs
        here, the database is asked now rather than at the next tick; in the event loop."""
        if job_id in self._running and not self._closing:
            check = asyncio.create_task(self._stop_if_cancelled(job_id))
            self._checks.add(check)
            check.add_done_callback(self._checks.discard)

    async def _stop_if_cancelled(self, job_id: str) -> None:
        try:
            await self._stop_cancelled([job_id])
        except Exception:  # the database may be away for a moment: the next tick looks again
            log.exception("looking up a cancel failed", job=job_id)

    async def _stop_cancelled(self, job_ids: list[str]) -> None:
        for job_id in await anyio.to_thread.run_sync(self._queue.cancel_requested, job_ids):
            self.stop_job(job_id)

    async def wait_for(self, job_id: str) -> None:
        entry = self._running.get(job_id)
        if entry is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(entry[0])

    async def shutdown(self, reason: RunEnd) -> None:
        """Stops the loops, then every run of this process (their jobs end `failed`)."""
        self._closing = True
        for loop in self._loops:
            loop.cancel()
        for job_id in list(self._running):
            self.stop_job(job_id, reason)
        tasks = [task for task, _ in self._running.values()]
        await asyncio.gather(*tasks, *self._loops, return_exceptions=True)

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            known = self._waiting
            # until a claim tells otherwise: a run that ends meanwhile must wake us again
            self._waiting = waiting = True
            try:
                if not known and self._has_slot():  # a look costs less than a claim
                    waiting = await anyio.to_thread.run_sync(self._queue.any_queued)
                while waiting and self._has_slot():
                    claim, waiting = await anyio.to_thread.run_sync(self._queue.claim)
                    if claim is None:
                        break
                    self._launch(claim)
            except Exception:  # the database may be away for a moment: the next tick retries
                log.exception("claiming a job failed")
            self._waiting = waiting

    def _has_slot(self) -> bool:
        """False when our own runs fill every slot, so no claim could succeed and none is
        tried; or while DATA_DIR is short of space, so that new starts wait."""
        return not self._guard.low and len(self._running) < self._queue.limits.total

    def _launch(self, claim: Claim) -> None:
        stop = StopRequest()
        task = asyncio.create_task(self._run(claim, stop), name=f"job-{claim.job.id}")
        self._running[claim.job.id] = (task, stop)

    async def _run(self, claim: Claim, stop: StopRequest) -> JobStatus:
        try:
            return await self._runner.run(claim, stop)
        finally:
            self._running.pop(claim.job.id, None)
            if self._waiting or self._queue.shared:  # its slot is free for them
                self.wake()

    async def _tick_loop(self) -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(self._queue.renew, list(self._running))
                await self._stop_cancelled(list(self._running))
                await anyio.to_thread.run_sync(self.recover)
            except Exception:
                log.exception("dispatcher tick failed")
            self.wake()
            await asyncio.sleep(TICK)

    async def _guard_loop(self) -> None:
        while True:
            try:
                was_low = self._guard.low
                victim = await anyio.to_thread.run_sync(self._guard.check, list(self._running))
                if victim is not None:
                    self.stop_job(victim, RunEnd.DISK_FULL)
                if was_low and not self._guard.low:  # the space is back: what waits starts
                    self.wake()
            except Exception:
                log.exception("disk guard failed")
            await asyncio.sleep(GUARD_TICK)

    def recover(self) -> int:
        """Blocking: ends the running jobs whose dispatcher is gone; returns how many."""
        recovered = 0
        for job in self._queue.abandoned():
            if not self._queue.take_over(job.id, job.lease_owner):
                continue
            killed = self._runner.executor.end_leftover(job)
            log.warning("recovered abandoned job", job=job.id, killed_leftover=killed)
            outcome = Outcome(JobStatus.FAILED, None, SERVER_GONE)
            self._runner.journal.finish(job, outcome, RunResult())
            recovered += 1
        return recovered

    def sweep(self) -> int:
        """Blocking, at start: ends every run that no running job holds (a dead server's,
        recovered above, or of a run that ended while it died)."""
        return self._runner.executor.sweep(self._queue.running_ids)

"""What a run writes: its start (its process, deadline, the workspace's commit) and its
end in the job's row, through `transitions`, each with its mark in the transcript
("run.started", "run.ended"), and its figures while it runs.

The start goes with the transcript's first transaction, the end with its last (the
recorder's); a run that failed before or outside its recorder ends by `finish`, its own
transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio
from sqlalchemy import Connection

from claude_batch_server.cgroups.base import Usage
from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.executors.base import Run
from claude_batch_server.jobs.outcome import Outcome
from claude_batch_server.jobs.recorder import OutputBudget, TranscriptRecorder
from claude_batch_server.jobs.transcript import Event, RunResult, server_event
from claude_batch_server.jobs.transitions import Transitions
from claude_batch_server.metrics import Metrics
from claude_batch_server.store.db import Database
from claude_batch_server.store.notify import Topic, publish_in
from claude_batch_server.store.tables import Job, utcnow

MEGABYTE = 1024 * 1024


class RunJournal:
    def __init__(
        self,
        database: Database,
        events: EventStore,
        broker: Broker,
        transitions: Transitions,
        metrics: Metrics,
        output_max_mb: int,
    ) -> None:
        self._database = database
        self._events = events
        self._broker = broker
        self._transitions = transitions
        self._metrics = metrics
        self.output_max_mb = output_max_mb

    async def recorder(
        self,
        job: Job,
        run: Run,
        commit: str | None,
        timeout: float,
        last_seq: int,
        on_failure: Callable[[], None],
        on_output_limit: Callable[[], None],
    ) -> TranscriptRecorder:
        """The run's transcript writer, whose first transaction records the run's start."""
        first = functools.partial(self._record_start, job, run, commit, timeout)
        # what earlier runs kept counts against JOB_OUTPUT_MAX_MB
        kept = await anyio.to_thread.run_sync(self._events.size, job.id) if job.runs else 0
        budget = OutputBudget(self.output_max_mb * MEGABYTE - kept, on_output_limit)
        return TranscriptRecorder(
            self._database, self._events, self._broker, job.id, first, on_failure, budget, last_seq
        )

    def _record_start(
        self,
        job: Job,
        run: Run,
        commit: str | None,
        timeout: float,
        connection: Connection,
        session_id: str | None,
    ) -> list[Event]:
        deadline = utcnow() + timedelta(seconds=timeout)
        self._transitions.record_start(
            connection, job.id, run.pid, run.pid_start, deadline, commit, session_id
        )
        return [started_mark(job, timeout)]

    def record_usage(self, job: Job, used: Usage) -> None:
        """Blocking: a running job's figures so far (its runs before this one included)."""
        cpu, peak = totals(job, used)
        with self._database.connection() as connection:
            self._transitions.record_usage(connection, job.id, cpu, peak)

    def finish_in(
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
        if not self._transitions.finish(connection, job_id, outcome, result, utcnow()):
            return []
        publish_in(connection, Topic.QUEUE)  # its slot is free, for any process to fill
        return [ended] if started is None else [started, ended]

    def finish(
        self, job: Job, outcome: Outcome, result: RunResult, started: Event | None = None
    ) -> None:
        """Blocking: records how the run of `job` (as it was claimed or taken over) ended in
        a transaction of its own, in the job and in its transcript (after the `started`
        mark, if that was not written yet)."""
        with self._database.connection() as connection:
            marks = self.finish_in(job.id, outcome, result, connection, started)
            self._events.append_in(connection, job.id, marks)
        self.ended(job.id, outcome, job.claimed_at)

    def ended(self, job_id: str, outcome: Outcome, claimed: datetime | None) -> None:
        """After the end is stored: counted, and its followers woken."""
        seconds = (utcnow() - claimed).total_seconds() if claimed else None
        self._metrics.job_ended(outcome.status.value, seconds)
        self._broker.publish(job_id)


def started_mark(job: Job, timeout: float) -> Event:
    return server_event("run.started", run=job.runs + 1, resume=job.runs > 0, timeout=timeout)


def totals(job: Job, used: Usage) -> tuple[float, int]:
    """The job's CPU time over all its runs, and the highest peak of memory of any run."""
    return job.cpu_seconds + used.cpu_seconds, max(job.memory_peak_bytes, used.memory_peak_bytes)

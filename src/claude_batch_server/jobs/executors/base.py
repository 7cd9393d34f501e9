"""The executor: where and how a prepared run of a job runs. The lifecycle, the queue and
the transcript talk to this Protocol alone, never to what runs behind it.

    start(PreparedRun) ─> Run ─ stdout()/stderr() lines ─> transcript
                              ─ watch(): resources while it runs, and an OOM kill
                              ─ wait()/poll(): its exit code
                              ─ stop(): early, at a cancel, a timeout, a shutdown
                              ─ end(): whatever is left ended, what it held released,
                                       what it used (always called, once)
                              ─ amend(): the outcome, with what only the executor knows
                                       of the run's end (a cluster's verdict)
    end_leftover(job) / sweep(keep): what a dead server's runs left, found and ended

`local` (`local.py`) runs on this host: the spawner, a control group, the Landlock
sandbox. Another executor (a cluster's) fits the same calls: its run's output comes
through the pipes of the process that submitted it, `stop` and `end_leftover` cancel by
the job's name, `watch` reads the cluster's accounting, and the limits are its own
arguments. It needs `cwd` (the workspace, beneath DATA_DIR) where the run executes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from claude_batch_server.accounts import Account
from claude_batch_server.cgroups.base import Usage
from claude_batch_server.jobs.lines import Line
from claude_batch_server.jobs.outcome import Outcome, RunEnd
from claude_batch_server.jobs.process import AgentProcess
from claude_batch_server.store.tables import Job


@dataclass(frozen=True)
class PreparedRun:
    """A run ready to start: the job's workspace made, its command line written."""

    job_id: str
    account: Account  # whom it runs as
    argv: list[str]  # nothing a user wrote (see `command`)
    env: dict[str, str]
    cwd: Path  # the job's workspace
    stdin: bytes  # the prompt, and any images
    timeout: float  # seconds; the lifecycle stops the run then (an executor may pass it on)
    # flag -> content: given to the command as `flag=path` of a file only its user reads
    files: dict[str, str] = field(default_factory=dict)


class Run(Protocol):
    """One started run."""

    @property
    def pid(self) -> int | None:
        """The process a successor looks for after a crash (None: found by name)."""

    @property
    def pid_start(self) -> int | None:
        """That process's start time, telling a reused pid apart."""

    def stdout(self) -> AsyncIterator[Line]: ...

    def stderr(self) -> AsyncIterator[Line]: ...

    def poll(self) -> int | None:
        """Its exit code once it exited (negative: killed by that signal), else None."""

    async def wait(self) -> int: ...

    async def stop(self) -> None:
        """Stops it (gracefully, then by force); returns once it has ended."""

    async def watch(self, on_usage: Callable[[Usage], None], on_oom: Callable[[], None]) -> None:
        """Until cancelled: what it used so far now and again, to `on_usage` (called in a
        worker thread), and `on_oom` once should it be killed for its memory."""

    async def end(self) -> Usage:
        """After it exited or was stopped, or when starting or following it failed: ends
        whatever is left of it and releases what it held; returns what it used."""

    async def amend(self, outcome: Outcome, ended: RunEnd) -> Outcome:
        """After `end`: `outcome` (decided from how it `ended`, its exit code and result),
        or what the executor knows better: a cluster that refused the run, ended it at its
        own time limit, or lost its node."""


class Executor(Protocol):
    name: str  # as EXECUTOR names it
    measures: bool  # whether `Usage` holds real figures
    memory_max: int  # bytes a run may use (0: no limit), for the error of an OOM kill

    async def open(self) -> None:
        """At the server's start, before any run."""

    async def close(self) -> None:
        """At its stop, after the last run ended."""

    async def start(self, run: PreparedRun) -> Run:
        """Starts `run`; on failure nothing of it is left."""

    def end_leftover(self, job: Job) -> bool:
        """Blocking: ends what a dead server's run of `job` left; True if there was any."""

    def sweep(self, keep: Callable[[], Iterable[str]]) -> int:
        """Blocking, at start: ends every run of this server's but those of the jobs that
        `keep()` names (run by other live servers); returns how many it ended. `keep` is
        called once the runs are listed: a run another server starts meanwhile is of a job
        claimed by then."""


class ProcessRun:
    """What the runs of both executors share: the agent's process on this host (for a
    cluster, the process that submitted the run), its pipes, its exit and its stop."""

    def __init__(self, process: AgentProcess) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def pid_start(self) -> int | None:
        return self._process.pid_start

    def stdout(self) -> AsyncIterator[Line]:
        return self._process.stdout()

    def stderr(self) -> AsyncIterator[Line]:
        return self._process.stderr()

    def poll(self) -> int | None:
        return self._process.poll()

    async def wait(self) -> int:
        return await self._process.wait()

    async def stop(self) -> None:
        await self._process.stop()

"""How a run ended (`RunEnd`), and what that makes of its job (`decide`): the status, the
exit code and the error its user reads."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.jobs.transcript import RunResult

SERVER_GONE = "the server stopped while this job was running; it did not finish"


class RunEnd(StrEnum):
    """Why a run's process is gone: it exited, or it was stopped for one of the others."""

    EXITED = "exited"  # by itself: its exit code and result decide
    TIMEOUT = "timeout"  # options.timeout or JOB_TIMEOUT_HOURS ran out
    CANCELLED = "cancelled"  # its user or an admin cancelled it (or deleted the job)
    SHUTDOWN = "shutdown"  # the server stopped under it
    OOM = "oom"  # the kernel killed a process of the run for its memory
    OUTPUT_LIMIT = "output limit"  # its transcript reached JOB_OUTPUT_MAX_MB
    DISK_FULL = "disk full"  # DATA_DIR ran short of space, and it had grown most
    TRANSCRIPT = "transcript"  # its transcript could not be written


@dataclass(frozen=True)
class Outcome:
    status: JobStatus
    exit_code: int | None
    error: str | None


def decide(
    ended: RunEnd,
    exit_code: int | None,
    result: RunResult,
    timeout: float,
    memory_max: int,
    output_mb: int,
) -> Outcome:
    """The job's status after a run that ended so; `timeout` in seconds, `memory_max` in
    bytes (0: none), `output_mb` JOB_OUTPUT_MAX_MB: for the error its user reads."""
    stopped = _STOPPED.get(ended)
    if stopped is not None:
        status, error = stopped
        return Outcome(status, exit_code, error.format(timeout=timeout, output_mb=output_mb))
    if ended is RunEnd.OOM:
        return Outcome(JobStatus.FAILED, exit_code, _out_of_memory(memory_max))
    if exit_code == 0 and result.succeeded:
        return Outcome(JobStatus.COMPLETED, 0, None)
    return Outcome(JobStatus.FAILED, exit_code, _failure(exit_code, result))


_STOPPED = {  # a run stopped for one of these ends so, whatever its exit code
    RunEnd.CANCELLED: (JobStatus.CANCELLED, "cancelled"),
    RunEnd.SHUTDOWN: (JobStatus.FAILED, SERVER_GONE),
    RunEnd.TIMEOUT: (JobStatus.TIMEOUT, "timed out after {timeout:g} s"),
    RunEnd.DISK_FULL: (
        JobStatus.FAILED,
        "stopped: free space on DATA_DIR fell below DATA_DIR_MIN_FREE, and of the running"
        " jobs this one grew most",
    ),
    RunEnd.OUTPUT_LIMIT: (
        JobStatus.FAILED,
        "stopped: its transcript reached JOB_OUTPUT_MAX_MB ({output_mb} MB)",
    ),
}


def _out_of_memory(limit: int) -> str:
    if not limit:
        return "out of memory: the kernel killed a process of the job"
    return (
        f"out of memory: the job reached JOB_MEMORY_MAX ({limit / 2**20:g} MiB) and its"
        " processes were killed"
    )


def _failure(exit_code: int | None, result: RunResult) -> str:
    if result.seen_result and (result.is_error or not result.succeeded):
        detail = result.output or "; ".join(result.errors) or result.subtype or "error result"
        return f"Claude Code reported an error ({result.subtype}): {detail}"[:4000]
    tail = "\n".join(line for line in result.stderr_tail if line)[-2000:]
    return f"Claude Code exited with code {exit_code}" + (f": {tail}" if tail else "")

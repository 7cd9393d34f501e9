"""How a run ended, and the job's status and error that follow from it."""

from __future__ import annotations

import pytest

from claude_batch_server.jobs.outcome import SERVER_GONE, RunEnd, decide
from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.jobs.transcript import RunResult

SUCCESS = RunResult(seen_result=True, subtype="success", output="done")


def test_an_exit_with_a_successful_result_completes() -> None:
    outcome = decide(RunEnd.EXITED, 0, SUCCESS, 60, 0, 100)
    assert (outcome.status, outcome.exit_code, outcome.error) == (JobStatus.COMPLETED, 0, None)


def test_an_exit_without_a_result_fails_with_the_stderr_tail() -> None:
    result = RunResult(stderr_tail=["", "boom"])
    outcome = decide(RunEnd.EXITED, 0, result, 60, 0, 100)
    assert outcome.status == JobStatus.FAILED
    assert outcome.error == "Claude Code exited with code 0: boom"


def test_an_error_result_fails_with_what_it_said() -> None:
    result = RunResult(seen_result=True, is_error=True, subtype="error_max_turns", output="x")
    outcome = decide(RunEnd.EXITED, 1, result, 60, 0, 100)
    assert outcome.error == "Claude Code reported an error (error_max_turns): x"


@pytest.mark.parametrize(
    ("ended", "status", "error"),
    [
        (RunEnd.CANCELLED, JobStatus.CANCELLED, "cancelled"),
        (RunEnd.SHUTDOWN, JobStatus.FAILED, SERVER_GONE),
        (RunEnd.TIMEOUT, JobStatus.TIMEOUT, "timed out after 8 s"),
        (RunEnd.OUTPUT_LIMIT, JobStatus.FAILED, "JOB_OUTPUT_MAX_MB (3 MB)"),
        (RunEnd.DISK_FULL, JobStatus.FAILED, "grew most"),
        (RunEnd.OOM, JobStatus.FAILED, "JOB_MEMORY_MAX (512 MiB)"),
    ],
)
def test_a_stopped_run_ends_as_it_was_stopped_even_after_a_success(
    ended: RunEnd, status: JobStatus, error: str
) -> None:
    outcome = decide(ended, 0, SUCCESS, 8, 512 * 2**20, 3)
    assert outcome.status == status
    assert outcome.error is not None and error in outcome.error
    assert outcome.exit_code == 0


def test_an_oom_without_a_limit_says_the_kernel_killed_it() -> None:
    outcome = decide(RunEnd.OOM, -9, RunResult(), 60, 0, 100)
    assert outcome.error == "out of memory: the kernel killed a process of the job"

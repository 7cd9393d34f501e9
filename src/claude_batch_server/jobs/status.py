"""A job's status, as the contract names it."""

from enum import StrEnum


class JobStatus(StrEnum):
    CREATED = "created"  # recorded; images may still be added; not yet asked to run
    QUEUED = "queued"  # waiting in the queue for a free slot
    RUNNING = "running"  # claimed: its workspace is being made, or Claude Code runs
    COMPLETED = "completed"  # Claude Code exited 0 with a result that is not an error
    FAILED = "failed"  # a non-zero exit, an error result, or the server died under it
    TIMEOUT = "timeout"  # stopped at options.timeout or JOB_TIMEOUT_HOURS
    CANCELLED = "cancelled"  # cancelled by its user or an admin

    @property
    def ended(self) -> bool:
        return self in ENDED


ENDED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.CANCELLED})
ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})

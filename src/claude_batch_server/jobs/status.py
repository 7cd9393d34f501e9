"""A job's status, as the contract names it, and every move between statuses.

    created ─start─> queued ─claim─> running ─finish─> completed │ failed │ timeout │ cancelled
       └──────cancel──────┴─> cancelled              ended ─resume─> queued

Each move is one named `Transition`, made by one conditional UPDATE in `transitions`
and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobStatus(StrEnum):
    CREATED = "created"  # recorded; images may still be added; not yet asked to run
    QUEUED = "queued"  # waiting in the queue for a free slot
    RUNNING = "running"  # claimed: its workspace is being made, or Claude Code runs
    COMPLETED = "completed"  # Claude Code exited 0 with a result that is not an error
    FAILED = "failed"  # a non-zero exit, an error result, or the server died under it
    TIMEOUT = "timeout"  # stopped at options.timeout or JOB_TIMEOUT_HOURS
    CANCELLED = "cancelled"  # cancelled by its user or an admin


ENDED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.CANCELLED})
ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


@dataclass(frozen=True)
class Transition:
    name: str
    before: frozenset[JobStatus]
    after: frozenset[JobStatus]


START = Transition("start", frozenset({JobStatus.CREATED}), frozenset({JobStatus.QUEUED}))
RESUME = Transition("resume", ENDED, frozenset({JobStatus.QUEUED}))  # another run
CLAIM = Transition("claim", frozenset({JobStatus.QUEUED}), frozenset({JobStatus.RUNNING}))
CANCEL = Transition(  # before it runs; a running job is stopped, then finishes cancelled
    "cancel", frozenset({JobStatus.CREATED, JobStatus.QUEUED}), frozenset({JobStatus.CANCELLED})
)
FINISH = Transition("finish", frozenset({JobStatus.RUNNING}), ENDED)  # a run's end, or recovery
TRANSITIONS = (START, RESUME, CLAIM, CANCEL, FINISH)

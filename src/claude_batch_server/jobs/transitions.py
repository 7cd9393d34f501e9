"""The one writer of the jobs table.

A job's status changes only by the transitions that `status.TRANSITIONS` lists, each one
conditional UPDATE here (`start`, `resume`, `claim`, `cancel`, `finish`): whatever races
(a cancel and a claim, a resume and the retention sweep, two servers' recoveries), one
wins and the others find the job moved on. A job's end (`cancel`, `finish`) also sets
going, in its transaction, what its results ask for (`ended`). The other writes, which
never change a status, are below them: a run's process and figures, leases, images.

Every method runs in the caller's transaction (`connection`), so that a move and what
must go with it (an audit row, a claim, a transcript's last events) commit together.
Statements are built once: on SQLite, building one costs more than running it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Row,
    String,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.orm import Session

from claude_batch_server.jobs.outcome import Outcome
from claude_batch_server.jobs.status import (
    CANCEL,
    CLAIM,
    FINISH,
    RESUME,
    START,
    JobStatus,
    Transition,
)
from claude_batch_server.jobs.transcript import RunResult
from claude_batch_server.store.tables import JOB_EVENTS, JOBS, Job, Repository, UTCDateTime

Ended = Callable[[Connection, str], None]  # in the transaction that ended a job
# `start` or `resume`: the job as queued, or None when it was not in a status to be
Enqueue = Callable[[Connection, str, str, datetime], Row[Any] | None]


def _param(name: str, column: str) -> BindParameter[Any]:
    return bindparam(name, type_=JOBS.c[column].type)


def _given_or_kept(name: str, column: str) -> ColumnElement[Any]:
    """The parameter `name` for `column`, or the column as it is when the parameter is NULL."""
    return func.coalesce(_param(name, column), JOBS.c[column])


def _from(transition: Transition) -> ColumnElement[bool]:
    return JOBS.c.status.in_(sorted(transition.before))


_THIS_JOB = JOBS.c.id == bindparam("job_id")
_OTHERS = JOBS.alias("others")  # the same table, not correlated with the one updated
# only a run of ours: after a takeover, the job is the new owner's
_OUR_RUN = (_THIS_JOB, _from(FINISH), JOBS.c.lease_owner == bindparam("owner"))


def _enqueue(transition: Transition) -> Any:
    return (
        update(JOBS)
        .where(
            _THIS_JOB,
            _from(transition),
            JOBS.c.workspace_removed.is_(False),  # a resume may race the retention sweep
        )
        .values(
            status=JobStatus.QUEUED,
            queued_at=bindparam("queued_at", type_=UTCDateTime),
            run_prompt=bindparam("new_prompt"),
            cancel_requested=False,
            error=None,
        )
        .returning(*JOBS.c)
    )


_START, _RESUME = _enqueue(START), _enqueue(RESUME)
_CANCEL = (
    update(JOBS)
    .where(_THIS_JOB, _from(CANCEL))
    .values(
        status=JobStatus.CANCELLED,
        completed_at=bindparam("now", type_=UTCDateTime),
        error="cancelled",
    )
)
# Of the claimed row, in RETURNING: spelled out, for SQLAlchemy writes RETURNING on SQLite
# without table names, and an unqualified `id` would mean whatever the subquery's table has.
_CLAIMED_ID = literal_column("jobs.id", String)
_CLAIMED_REPOSITORY = literal_column("jobs.repository_id", String)
_REPOSITORY_COMMIT = (
    select(Repository.commit).where(Repository.id == _CLAIMED_REPOSITORY).scalar_subquery()
)
_LAST_SEQ = (
    select(func.coalesce(func.max(JOB_EVENTS.c.seq), 0))
    .where(JOB_EVENTS.c.job_id == _CLAIMED_ID)
    .scalar_subquery()
)
_CLAIM = (  # the first queued job of a user (that no one else holds) becomes ours
    update(JOBS)
    .where(
        JOBS.c.id
        == select(_OTHERS.c.id)
        .where(_OTHERS.c.status.in_(sorted(CLAIM.before)), _OTHERS.c.user == bindparam("who"))
        .order_by(_OTHERS.c.queued_at, _OTHERS.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    .values(
        status=JobStatus.RUNNING,
        lease_owner=bindparam("owner"),
        lease_expires=bindparam("expires", type_=UTCDateTime),
        started_at=func.coalesce(JOBS.c.started_at, bindparam("now", type_=UTCDateTime)),
        claimed_at=bindparam("now", type_=UTCDateTime),
    )
    .returning(*JOBS.c, _REPOSITORY_COMMIT.label("repository_commit"), _LAST_SEQ.label("last_seq"))
)
# A run's figures add up over its job's runs; output and session id stay as they were
# when a run reports none.
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
_REQUEST_CANCEL = (
    update(JOBS).where(_THIS_JOB, JOBS.c.status == JobStatus.RUNNING).values(cancel_requested=True)
)
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
_RECORD_USAGE = (
    update(JOBS)
    .where(*_OUR_RUN)
    .values(
        cpu_seconds=_param("cpu", "cpu_seconds"),
        memory_peak_bytes=_param("peak", "memory_peak_bytes"),
    )
)
_RECORD_SESSION = update(JOBS).where(_THIS_JOB).values(session_id=bindparam("sid"))
_RENEW = (
    update(JOBS)
    .where(
        JOBS.c.id.in_(bindparam("job_ids", expanding=True)),
        JOBS.c.lease_owner == bindparam("owner"),
    )
    .values(lease_expires=bindparam("expires", type_=UTCDateTime))
)
_TAKE_OVER = (
    update(JOBS)
    .where(
        _THIS_JOB,
        JOBS.c.lease_owner.is_not_distinct_from(bindparam("previous", type_=String)),
        JOBS.c.status == JobStatus.RUNNING,
    )
    .values(lease_owner=bindparam("owner"), lease_expires=bindparam("expires", type_=UTCDateTime))
)
_IMAGES = select(JOBS.c.images).where(_THIS_JOB, JOBS.c.status == JobStatus.CREATED)
_SET_IMAGES = (
    update(JOBS).where(_THIS_JOB).values(images=bindparam("names", type_=JOBS.c.images.type))
)
_WORKSPACE_REMOVED = update(JOBS).where(_THIS_JOB).values(workspace_removed=True)
_DELETE_EVENTS = delete(JOB_EVENTS).where(JOB_EVENTS.c.job_id == bindparam("job_id"))
_DELETE = delete(JOBS).where(_THIS_JOB)


class Transitions:
    def __init__(self, owner: str, ended: Ended) -> None:
        self.owner = owner  # the lease owner this process's claims and runs are under
        self._ended = ended

    # the transitions

    def start(
        self, connection: Connection, job_id: str, prompt: str, now: datetime
    ) -> Row[Any] | None:
        """created → queued: the job as queued, or None when it was not `created`."""
        return self._enqueue(connection, _START, job_id, prompt, now)

    def resume(
        self, connection: Connection, job_id: str, prompt: str, now: datetime
    ) -> Row[Any] | None:
        """ended → queued, for another run in the same workspace (None: not ended, or the
        workspace is gone)."""
        return self._enqueue(connection, _RESUME, job_id, prompt, now)

    @staticmethod
    def _enqueue(
        connection: Connection, statement: Any, job_id: str, prompt: str, now: datetime
    ) -> Row[Any] | None:
        values = {"job_id": job_id, "queued_at": now, "new_prompt": prompt}
        return connection.execute(statement, values).first()

    @staticmethod
    def claim(
        connection: Connection, user: str, owner: str, now: datetime, expires: datetime
    ) -> Row[Any] | None:
        """queued → running: `user`'s first queued job, leased to `owner` until `expires`."""
        params = {"who": user, "owner": owner, "now": now, "expires": expires}
        return connection.execute(_CLAIM, params).first()

    def cancel(self, connection: Connection, job_id: str, now: datetime) -> bool:
        """created or queued → cancelled; False when it was neither."""
        if not connection.execute(_CANCEL, {"job_id": job_id, "now": now}).rowcount:
            return False
        self._ended(connection, job_id)
        return True

    def finish(
        self,
        connection: Connection,
        job_id: str,
        outcome: Outcome,
        result: RunResult,
        now: datetime,
    ) -> bool:
        """running (a run of ours) → the outcome's status, with what the run reported;
        False when the job is no longer ours (deleted while it ran, or taken over)."""
        params = _finish_params(job_id, outcome, result, now) | {"owner": self.owner}
        if connection.scalar(_FINISH, params) is None:
            return False
        self._ended(connection, job_id)
        return True

    # writes that change no status

    def request_cancel(self, connection: Connection, job_id: str) -> bool:
        """Marks a running job to be stopped by whichever process runs it."""
        return bool(connection.execute(_REQUEST_CANCEL, {"job_id": job_id}).rowcount)

    @staticmethod
    def record_start(
        connection: Connection,
        job_id: str,
        pid: int | None,
        pid_start: int | None,
        deadline: datetime,
        commit: str | None,
        session_id: str | None,
    ) -> None:
        """A run's process (for a successor after a crash), deadline, and the workspace's
        commit and session id once known."""
        params = {
            "job_id": job_id,
            "new_pid": pid,
            "new_pid_start": pid_start,
            "new_deadline": deadline,
            "new_commit": commit,
            "new_session_id": session_id,
        }
        connection.execute(_RECORD_START, params)

    def record_usage(self, connection: Connection, job_id: str, cpu: float, peak: int) -> None:
        params = {"job_id": job_id, "owner": self.owner, "cpu": cpu, "peak": peak}
        connection.execute(_RECORD_USAGE, params)

    @staticmethod
    def record_session(connection: Connection, job_id: str, session_id: str) -> None:
        connection.execute(_RECORD_SESSION, {"job_id": job_id, "sid": session_id})

    @staticmethod
    def renew(
        connection: Connection, job_ids: Sequence[str], owner: str, expires: datetime
    ) -> None:
        params = {"job_ids": list(job_ids), "owner": owner, "expires": expires}
        connection.execute(_RENEW, params)

    @staticmethod
    def take_over(
        connection: Connection, job_id: str, previous: str | None, owner: str, expires: datetime
    ) -> bool:
        params = {"job_id": job_id, "previous": previous, "owner": owner, "expires": expires}
        return bool(connection.execute(_TAKE_OVER, params).rowcount)

    @staticmethod
    def add_images(connection: Connection, job_id: str, names: list[str]) -> bool:
        """Appends to the job's images, while it is `created` only."""
        images = connection.scalar(_IMAGES, {"job_id": job_id})
        if images is None:
            return False
        connection.execute(_SET_IMAGES, {"job_id": job_id, "names": [*images, *names]})
        return True

    @staticmethod
    def workspace_removed(connection: Connection, job_id: str) -> None:
        connection.execute(_WORKSPACE_REMOVED, {"job_id": job_id})

    @staticmethod
    def create(session: Session, job: Job) -> None:
        """A new job, `created`."""
        session.add(job)

    @staticmethod
    def delete(connection: Connection, job_id: str) -> None:
        """The job and its transcript."""
        connection.execute(_DELETE_EVENTS, {"job_id": job_id})
        connection.execute(_DELETE, {"job_id": job_id})


def _finish_params(
    job_id: str, outcome: Outcome, result: RunResult, now: datetime
) -> dict[str, Any]:
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
        "now": now,
    }

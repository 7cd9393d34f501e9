"""The durable queue: claims under the concurrency limits, leases, and what a dead
dispatcher left behind.

The queue decides which job runs next; the move itself is the transition `claim` (queued →
running, one `UPDATE … RETURNING` in `transitions`). A claim is one transaction that counts
the running jobs and takes the next queued one, serialised between processes (SQLite:
`BEGIN IMMEDIATE`; PostgreSQL: an advisory lock, then `FOR UPDATE SKIP LOCKED` on the row),
so the limits hold even for an instant; a start that finds a slot free claims in its own transaction
(`claim_in`). It runs for every job, so it goes through Core, not the ORM.
Fairness: the next job belongs to the user with the fewest running jobs and, among those,
the one served longest ago (round robin); within one user, first in, first out.
A claimed job carries a lease that its dispatcher's heartbeat renews; when the lease
lapses, any process may take the job over and end it.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, bindparam, func, select, text

from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.jobs.transitions import Transitions
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JOBS, Job, UTCDateTime, detached, utcnow

CLAIM_LOCK = 7_351_421  # names the PostgreSQL advisory lock that serialises claims
NEVER = datetime.min.replace(tzinfo=UTC)


def new_owner_id() -> str:
    """host:pid:nonce, so a restarted process can tell its dead predecessors' leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_here(owner: str | None) -> bool:
    """Whether `owner` was a process on this host (or is unknown): only then may its job's
    pid name anything here."""
    return owner is None or owner.partition(":")[0] == socket.gethostname()


def owner_is_dead(owner: str) -> bool:
    """True when `owner` was a process on this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Claim:
    job: Job  # now running, leased to us
    repository_commit: str | None  # where its repository is now: a first run starts there
    last_seq: int  # of its transcript's last event (0: none yet)


@dataclass(frozen=True)
class Limits:
    total: int
    per_user: int  # 0: no limit beyond `total`


# Statements built once, for they run for every job: on SQLite, building one costs more
# than running it.
_CLAIM_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=CLAIM_LOCK)
_QUEUE_STATE = (
    select(JOBS.c.user, JOBS.c.status, func.count(), func.min(JOBS.c.queued_at))
    .where(JOBS.c.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
    .group_by(JOBS.c.user, JOBS.c.status)
)
_ANY_QUEUED = select(JOBS.c.id).where(JOBS.c.status == JobStatus.QUEUED).limit(1)
_LAST_SERVED = (
    select(JOBS.c.user, func.max(JOBS.c.claimed_at))
    .where(JOBS.c.user.in_(bindparam("users", expanding=True)))
    .group_by(JOBS.c.user)
)
_OTHERS = JOBS.alias("others")  # the same table, not correlated with the one updated
_AHEAD = (  # of a job queued at :queued_at, for its position
    select(func.count())
    .where(
        _OTHERS.c.status == JobStatus.QUEUED,
        _OTHERS.c.queued_at < bindparam("queued_at", type_=UTCDateTime),
    )
    .scalar_subquery()
)
_POSITION = select(_AHEAD + 1)


class JobQueue:
    def __init__(self, database: Database, limits: Limits, owner: str, lease: timedelta) -> None:
        self._database = database
        self.limits = limits
        self.owner = owner
        self.lease = lease
        # PostgreSQL may serve several server processes, whose queued jobs this one cannot see
        # coming; on SQLite one process dispatches
        self.shared = not database.is_sqlite

    def claim(self) -> tuple[Claim | None, bool]:
        """The next job to run, now `running` and leased to us (None when none may start),
        and whether jobs are left waiting: if not, no claim can succeed until one is queued."""
        with self._database.connection() as connection:
            return self.claim_in(connection)

    def claim_in(self, connection: Connection, locked: bool = False) -> tuple[Claim | None, bool]:
        """`claim`, in the transaction of `connection`: the claim holds once it commits.
        `locked`: the transaction took the claims' lock already (`lock_claims_in`)."""
        if not locked:
            self.lock_claims_in(connection)
        running, waiting, queued = _queue_state(connection)
        claim = self._take(connection, running, waiting)
        return claim, queued > (claim is not None)

    def lock_claims_in(self, connection: Connection) -> None:
        """The lock that serialises claims (PostgreSQL), until the transaction of
        `connection` ends. A transaction that claims takes it before it changes any job: a
        claim counts a change of its job's user (store/migrations 0010), and so waits for a
        transaction that changed a job of hers; had that one changed it first and then
        waited for this lock, they would wait for each other (a deadlock)."""
        if not self._database.is_sqlite:
            connection.execute(_CLAIM_LOCK)

    def any_queued(self) -> bool:
        """Whether any job waits, at a glance and without the claim's lock: whether a claim
        is worth its transaction."""
        with self._database.read_connection() as connection:
            return connection.scalar(_ANY_QUEUED) is not None

    def _take(
        self, connection: Connection, running: dict[str, int], waiting: dict[str, datetime | None]
    ) -> Claim | None:
        if sum(running.values()) >= self.limits.total:
            return None
        user = self._next_user(connection, running, waiting)
        if user is None:
            return None
        now = utcnow()
        row = Transitions.claim(connection, user, self.owner, now, now + self.lease)
        if row is None:
            return None
        values = dict(row._mapping)
        commit, last_seq = values.pop("repository_commit"), values.pop("last_seq")
        return Claim(detached(Job, values), commit, last_seq)

    def _next_user(
        self, connection: Connection, running: dict[str, int], waiting: dict[str, datetime | None]
    ) -> str | None:
        per_user = self.limits.per_user
        eligible = [u for u in waiting if not per_user or running.get(u, 0) < per_user]
        if not eligible:
            return None
        fewest = min(running.get(u, 0) for u in eligible)
        tied = [u for u in eligible if running.get(u, 0) == fewest]
        if len(tied) == 1:
            return tied[0]  # no round robin to settle: spare the query over their history
        served: dict[str, datetime | None] = dict(
            connection.execute(_LAST_SERVED, {"users": tied}).tuples().all()
        )
        return min(tied, key=lambda u: (served.get(u) or NEVER, waiting[u] or NEVER, u))

    def renew(self, job_ids: list[str]) -> None:
        """The heartbeat: push the lease of our running jobs forward."""
        if not job_ids:
            return
        with self._database.connection() as connection:
            Transitions.renew(connection, job_ids, self.owner, utcnow() + self.lease)

    def cancel_requested(self, job_ids: list[str]) -> list[str]:
        """Those of `job_ids` that someone asked to cancel (perhaps through another process)."""
        if not job_ids:
            return []
        with self._database.read() as session:
            query = select(Job.id).where(Job.id.in_(job_ids), Job.cancel_requested)
            return list(session.scalars(query))

    def abandoned(self) -> list[Job]:
        """Running jobs whose dispatcher is gone: its lease lapsed, or its process died."""
        now = utcnow()
        with self._database.read() as session:
            jobs = session.scalars(
                select(Job).where(Job.status == JobStatus.RUNNING, Job.lease_owner != self.owner)
            ).all()
        return [job for job in jobs if _abandoned(job, now)]

    def running_ids(self) -> list[str]:
        with self._database.read() as session:
            return list(session.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING)))

    def take_over(self, job_id: str, previous_owner: str | None) -> bool:
        """Moves an abandoned job's lease to us; False when someone else was quicker."""
        with self._database.connection() as connection:
            expires = utcnow() + self.lease
            return Transitions.take_over(connection, job_id, previous_owner, self.owner, expires)

    def position(self, job: Job) -> int | None:
        """1 + the queued jobs queued before it: an estimate, as fairness may reorder."""
        if job.status != JobStatus.QUEUED or job.queued_at is None:
            return None  # without a transaction
        with self._database.read_connection() as connection:
            return self.position_in(connection, job.queued_at)

    @staticmethod
    def position_in(connection: Connection, queued_at: datetime) -> int:
        """The position of a job queued at `queued_at`, in the transaction of `connection`."""
        return int(connection.execute(_POSITION, {"queued_at": queued_at}).scalar_one())


def _queue_state(
    connection: Connection,
) -> tuple[dict[str, int], dict[str, datetime | None], int]:
    """In one query: the running jobs per user, when each waiting user's first job was
    queued, and how many jobs are queued."""
    rows = connection.execute(_QUEUE_STATE).all()
    running = {user: count for user, status, count, _ in rows if status == JobStatus.RUNNING}
    waiting = {user: first for user, status, _, first in rows if status == JobStatus.QUEUED}
    queued = sum(count for _, status, count, _ in rows if status == JobStatus.QUEUED)
    return running, waiting, queued


def _abandoned(job: Job, now: datetime) -> bool:
    if job.lease_owner is None or job.lease_expires is None:
        return True
    return job.lease_expires < now or owner_is_dead(job.lease_owner)

"""The tables. Times are timezone-aware UTC everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect, Row
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    configure_mappers,
    make_transient_to_detached,
    mapped_column,
)
from sqlalchemy.orm.instrumentation import manager_of_class


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back an aware datetime (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


Model = TypeVar("Model", bound=Base)


def detached(model: type[Model], row: Row[Any] | Mapping[str, Any]) -> Model:
    """The `model` object of a row read through Core, as a closed session would have left
    it (detached, nothing pending): the hot paths skip the ORM yet hand out models."""
    # the values go straight into the instance: through the constructor, each attribute
    # set fires the ORM's events, which costs more than the query
    manager = manager_of_class(model)
    if not manager.mapper.configured:  # the constructor's first call would do it
        configure_mappers()
    instance: Model = manager.new_instance()
    instance.__dict__.update(row._mapping if isinstance(row, Row) else row)
    make_transient_to_detached(instance)
    return instance


class RevokedToken(Base):
    """A logged-out token's id, kept until the token would have expired anyway."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # what other processes have not seen yet: those revoked since they last looked
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


REVOKED_TOKENS: Table = Base.metadata.tables[RevokedToken.__tablename__]  # for Core statements


class LoginThrottle(Base):
    """Recent failed logins for one user name or one client address."""

    __tablename__ = "login_throttles"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # "user" | "address"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure: Mapped[datetime] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditEvent(Base):
    """Who did what, from where, and how it ended."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_user_time", "user", "time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user: Mapped[str] = mapped_column(String(255), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(32))


AUDIT_EVENTS: Table = Base.metadata.tables[AuditEvent.__tablename__]  # for Core statements


class Repository(Base):
    """A registered git repository of one user (names are per owner, `registered_by`); its
    clone lives in DATA_DIR/repos/<id>. `id` keys it on disk and in jobs: a random hex
    string, or the name itself for a repository registered while names were server-wide."""

    __tablename__ = "repositories"
    __table_args__ = (UniqueConstraint("registered_by", "name", name="uq_repositories_owner"),)

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    git_url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    branch: Mapped[str | None] = mapped_column(String(255), nullable=True)
    commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    registered_by: Mapped[str] = mapped_column(String(255))  # the owner
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_pull: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Job(Base):
    """A prompt run by Claude Code in a workspace of one repository, possibly several times
    (each resume is another run in the same workspace and session)."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_user_created_id", "user", "created_at", "id"),  # a page of one user's
        Index("ix_jobs_status_queued", "status", "queued_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(100))  # its name, as the user gave it
    repository_id: Mapped[str] = mapped_column(String(100), index=True)  # Repository.id
    prompt: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    images: Mapped[list[str]] = mapped_column(JSON, default=list)  # uploaded, in order
    expected_images: Mapped[list[str]] = mapped_column(JSON, default=list)  # named at create
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # last run
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # the run waiting in the queue or under way: its prompt, and whether it resumes
    run_prompt: Mapped[str] = mapped_column(Text)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # what the runs produced
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    num_turns: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # from the job's control group: CPU time over its runs, the highest peak of one run
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    memory_peak_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # who runs it: the lease a dispatcher holds, and the process group it started
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_start: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    workspace_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    # options.branch: {branch, commit, pushed, error, pullRequestUrl}; null without it
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)


JOBS: Table = Base.metadata.tables[Job.__tablename__]  # for Core statements


class JobVersion(Base):
    """How often one user's jobs have changed: database triggers on `jobs` count every
    insert, update and delete, whoever makes it (store/migrations 0010), so that a page of
    a listing kept as sent is known to be current by reading one row (api/listings.py)."""

    __tablename__ = "job_versions"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


JOB_VERSIONS: Table = Base.metadata.tables[JobVersion.__tablename__]


class JobEvent(Base):
    """One line of a job's transcript: a stream-json event, a raw line, or stderr."""

    __tablename__ = "job_events"

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)


JOB_EVENTS: Table = Base.metadata.tables[JobEvent.__tablename__]  # for Core statements


class ResultTask(Base):
    """The outbox: a branch to push or a webhook to deliver for one end of a job, due at
    `next_at` (a worker that takes it moves `next_at` on: a lease, for it may die)."""

    __tablename__ = "result_tasks"
    __table_args__ = (Index("ix_result_tasks_due", "state", "next_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # "push" | "webhook"
    target: Mapped[str] = mapped_column(Text)  # the branch, or the webhook's URL
    base: Mapped[str | None] = mapped_column(String(64), nullable=True)  # a push's parent
    message_id: Mapped[str] = mapped_column(String(64))  # webhook-id, the same on retries
    body: Mapped[str | None] = mapped_column(Text, nullable=True)  # fixed at the 1st attempt
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))  # "pending" | "done" | "failed"
    next_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


RESULT_TASKS: Table = Base.metadata.tables[ResultTask.__tablename__]


class DeliveryAttempt(Base):
    """One attempt to deliver a job's webhook, as `GET /jobs/{id}/deliveries` lists it."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    url: Mapped[str] = mapped_column(Text)  # as its job's user may see it
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # HTTP status
    attempt: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


DELIVERY_ATTEMPTS: Table = Base.metadata.tables[DeliveryAttempt.__tablename__]

"""The services of one app instance, built together in `build_services`."""

from __future__ import annotations

import functools
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from claude_batch_server import accounts
from claude_batch_server.audit import Audit, Auditor
from claude_batch_server.auth.base import Authenticator
from claude_batch_server.auth.pam import PamAuthenticator
from claude_batch_server.auth.policy import LoginPolicy
from claude_batch_server.auth.service import AuthService, User
from claude_batch_server.auth.shadow import ShadowAuthenticator
from claude_batch_server.auth.throttle import Throttle
from claude_batch_server.auth.tokens import TokenService
from claude_batch_server.cgroups.base import Limits as GroupLimits
from claude_batch_server.cgroups.base import root_name
from claude_batch_server.files.diffs import BoundedDiffs
from claude_batch_server.files.service import FileService
from claude_batch_server.health import HealthService
from claude_batch_server.jobs.containment import Containment
from claude_batch_server.jobs.disk import DiskGuard
from claude_batch_server.jobs.dispatcher import TICK, Dispatcher
from claude_batch_server.jobs.events import Broker, EventStore
from claude_batch_server.jobs.executors import cluster_for, executor_for
from claude_batch_server.jobs.executors.base import Executor
from claude_batch_server.jobs.images import ImageStore
from claude_batch_server.jobs.journal import RunJournal
from claude_batch_server.jobs.preparation import RunPreparer
from claude_batch_server.jobs.queue import JobQueue, Limits, new_owner_id
from claude_batch_server.jobs.reading import JobReader, active_jobs_in
from claude_batch_server.jobs.retention import Retention
from claude_batch_server.jobs.running import JobRunner
from claude_batch_server.jobs.sandbox import Sandbox
from claude_batch_server.jobs.service import JobService
from claude_batch_server.jobs.transitions import Transitions
from claude_batch_server.metrics import Metrics
from claude_batch_server.quotas import DiskQuotas
from claude_batch_server.repositories.service import RepositoryService
from claude_batch_server.results.service import ResultService
from claude_batch_server.settings import AuthBackend, SandboxMode, Settings
from claude_batch_server.store.db import Database
from claude_batch_server.store.notify import Notifier, Topic
from claude_batch_server.workspaces.engine import WorkspaceEngine

JOB_LEASE = timedelta(seconds=30)


@dataclass
class Services:
    settings: Settings
    database: Database
    auditor: Auditor
    auth: AuthService
    health: HealthService
    workspaces: WorkspaceEngine
    repositories: RepositoryService
    jobs: JobService  # the lifecycle
    job_reader: JobReader  # reading and following
    retention: Retention
    dispatcher: Dispatcher
    files: FileService
    metrics: Metrics
    executor: Executor
    containment: Containment
    sandbox: Sandbox
    results: ResultService
    notifier: Notifier

    def audit(
        self, user: User, address: str, action: str, target: str
    ) -> AbstractContextManager[Audit]:
        return self.auditor.around(user=user.name, address=address, action=action, target=target)

    def close(self) -> None:
        self.containment.close()
        self.database.close()


def authenticator_for(settings: Settings) -> Authenticator:
    if settings.AUTH_BACKEND is AuthBackend.SHADOW:
        return ShadowAuthenticator(settings.PASSWD_FILE, settings.SHADOW_FILE)
    return PamAuthenticator(settings.SHADOW_FILE)


def _account_files(settings: Settings) -> list[Path]:
    """The files whose change may change an account's facts."""
    return [*accounts.SYSTEM_FILES, settings.PASSWD_FILE, settings.SHADOW_FILE]


def build_services(settings: Settings, database: Database) -> Services:
    metrics = Metrics(database)
    auditor = Auditor(database, metrics.audited_event)
    policy = LoginPolicy(
        allowed_users=frozenset(settings.ALLOWED_USERS),
        allowed_groups=frozenset(settings.ALLOWED_GROUPS),
        require_shadow=settings.AUTH_BACKEND is AuthBackend.SHADOW,
    )
    lifetime = timedelta(hours=settings.JWT_EXPIRY_HOURS)
    # refreshed every dispatch tick (app.py): a copy two ticks old is no longer trusted
    tokens = TokenService(settings.jwt_key, lifetime, database, stale_after=2 * TICK)
    auth = AuthService(
        authenticator_for(settings),
        policy,
        Throttle(database),
        tokens,
        auditor,
        admin_group=settings.ADMIN_GROUP,
        allow_hash_login=settings.ALLOW_HASH_LOGIN,
        account_files=_account_files(settings),
    )
    containment = Containment.for_host(root_name(settings.DATA_DIR), _group_limits(settings))
    quotas = DiskQuotas(settings.job_disk_max(_filesystem_size(settings.DATA_DIR)))
    cluster = cluster_for(settings)
    # a Slurm node sees DATA_DIR's folders, never this host's mounts
    shared = cluster is not None
    workspaces = WorkspaceEngine(settings.DATA_DIR, settings.COW_STRATEGY, quotas, shared)
    health = HealthService(
        database,
        settings.DATA_DIR,
        settings.CLAUDE_COMMAND,
        workspaces.workspaces_root,
        containment.flavour.value,
        functools.partial(cluster.check, settings.SLURM_PARTITION) if cluster else None,
    )
    repositories = RepositoryService(
        database, workspaces, settings.DATA_DIR, accounts.lookup, active_jobs_in
    )
    # Landlock confines this host's processes, not a Slurm step (Settings refuse `on` so)
    sandbox_mode = SandboxMode.OFF if shared else settings.JOB_SANDBOX
    sandbox = Sandbox(sandbox_mode, settings.DATA_DIR / "tmp", workspaces.count_against_quota)
    executor = executor_for(settings, containment, sandbox, cluster)
    results = ResultService(
        database,
        workspaces,
        accounts.lookup,
        settings.WEBHOOK_URL,
        settings.webhook_secret,
        settings.WEBHOOK_ALLOWED_HOSTS,
    )
    notifier = Notifier(database.url)
    engine = _job_engine(
        settings,
        database,
        workspaces,
        repositories,
        metrics,
        executor,
        sandbox,
        results,
        notifier,
    )
    files = FileService(workspaces, accounts.lookup, BoundedDiffs(containment))
    return Services(
        settings,
        database,
        auditor,
        auth,
        health,
        workspaces,
        repositories,
        engine.jobs,
        engine.job_reader,
        engine.retention,
        engine.dispatcher,
        files,
        metrics,
        executor,
        containment,
        sandbox,
        results,
        notifier,
    )


def _filesystem_size(path: Path) -> int:
    found = os.statvfs(path)
    return found.f_blocks * found.f_frsize


def _group_limits(settings: Settings) -> GroupLimits:
    return GroupLimits(settings.job_memory_max, settings.JOB_CPUS, settings.JOB_PIDS_MAX)


@dataclass(frozen=True)
class _JobEngine:
    dispatcher: Dispatcher
    jobs: JobService
    job_reader: JobReader
    retention: Retention


def _job_engine(
    settings: Settings,
    database: Database,
    workspaces: WorkspaceEngine,
    repositories: RepositoryService,
    metrics: Metrics,
    executor: Executor,
    sandbox: Sandbox,
    results: ResultService,
    notifier: Notifier,
) -> _JobEngine:
    limits = Limits(settings.MAX_CONCURRENT_JOBS, settings.MAX_CONCURRENT_JOBS_PER_USER)
    transitions = Transitions(new_owner_id(), results.ended_in)
    queue = JobQueue(database, limits, transitions.owner, JOB_LEASE)
    events, broker = EventStore(database), Broker()
    images = ImageStore(settings.DATA_DIR / "uploads")
    preparer = RunPreparer(
        workspaces,
        images,
        accounts.AccountCache(accounts.lookup, _account_files(settings)),
        settings.CLAUDE_COMMAND,
        timedelta(hours=settings.JOB_TIMEOUT_HOURS),
        metrics,
    )
    journal = RunJournal(database, events, broker, transitions, metrics, settings.JOB_OUTPUT_MAX_MB)
    runner = JobRunner(preparer, executor, journal, metrics)
    guard = DiskGuard(settings.DATA_DIR, settings.min_free_bytes, workspaces, sandbox)
    dispatcher = Dispatcher(queue, runner, guard)
    # what other server processes on the database changed: each handler looks it up
    notifier.subscribe(Topic.QUEUE, lambda _: dispatcher.wake())
    notifier.subscribe(Topic.CANCEL, dispatcher.cancel_noticed)
    notifier.subscribe(Topic.EVENTS, broker.publish)
    reader = JobReader(database, queue, events, broker)
    jobs = JobService(
        database, transitions, queue, dispatcher, reader, images, workspaces, repositories, results
    )
    return _JobEngine(
        dispatcher, jobs, reader, Retention(database, workspaces, images, transitions)
    )

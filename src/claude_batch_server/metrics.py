"""Prometheus metrics: counters kept by this process, and gauges read from the database at
every scrape (so that they are right whichever process runs the jobs)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import Job

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
LOGIN_OUTCOMES = ("success", "failed", "throttled")  # public: "refused" counts as "failed"
CPU_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
MEMORY_BUCKETS = tuple(2**power for power in range(24, 38))  # 16 MiB … 128 GiB
WORKSPACE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class QueueCollector(Collector):
    def __init__(self, database: Database) -> None:
        self._database = database

    def collect(self) -> Iterator[Metric]:
        with self._database.read() as session:
            rows = session.execute(
                select(Job.status, Job.user, func.count())
                .where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
                .group_by(Job.status, Job.user)
            ).all()
        depth = GaugeMetricFamily("cbs_queue_depth", "Jobs waiting in the queue")
        depth.add_metric([], sum(n for status, _, n in rows if status == JobStatus.QUEUED))
        running = GaugeMetricFamily(
            "cbs_running_jobs", "Jobs running now, by user", labels=["user"]
        )
        for status, user, count in rows:
            if status == JobStatus.RUNNING:
                running.add_metric([user], count)
        total = GaugeMetricFamily("cbs_running_jobs_total", "Jobs running now")
        total.add_metric([], sum(n for status, _, n in rows if status == JobStatus.RUNNING))
        yield from (depth, running, total)


class Metrics:
    def __init__(self, database: Database) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(QueueCollector(database))
        self.job_outcomes = Counter(
            "cbs_job_outcomes",
            "Runs of jobs, by how they ended",
            ["status"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "cbs_job_duration_seconds",
            "How long a run of a job took, by how it ended",
            ["status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.workspace_seconds = Histogram(
            "cbs_workspace_create_seconds",
            "Time to make a job's workspace, by strategy",
            ["strategy"],
            buckets=WORKSPACE_BUCKETS,
            registry=self.registry,
        )
        self.run_cpu = Histogram(
            "cbs_job_cpu_seconds",
            "CPU time of one run of a job, all its processes together",
            buckets=CPU_BUCKETS,
            registry=self.registry,
        )
        self.run_memory = Histogram(
            "cbs_job_memory_peak_bytes",
            "The peak of memory of one run of a job, all its processes together",
            buckets=MEMORY_BUCKETS,
            registry=self.registry,
        )
        self.logins = Counter(
            "cbs_logins",
            "Login attempts, by outcome (success, failed, throttled)",
            ["outcome"],
            registry=self.registry,
        )
        self.audited = Counter(
            "cbs_audit_events",
            "Audited operations, by action and outcome",
            ["action", "outcome"],
            registry=self.registry,
        )

        for outcome in LOGIN_OUTCOMES:  # every series from the start: none appears on cue
            self.logins.labels(outcome)
            self.audited.labels("login", outcome)

    def audited_event(self, action: str, outcome: str) -> None:
        # /metrics is public: there a refused account (unknown, locked, not allowed) is one
        # more failed login, or it would tell who has an account; the audit trail keeps it
        outcome = "failed" if (action, outcome) == ("login", "refused") else outcome
        self.audited.labels(action, outcome).inc()
        if action == "login":
            self.logins.labels(outcome).inc()

    def job_ended(self, status: str, seconds: float | None) -> None:
        self.job_outcomes.labels(status).inc()
        if seconds is not None:
            self.job_duration.labels(status).observe(seconds)

    def run_resources(self, measured: bool, cpu_seconds: float, memory_peak: int) -> None:
        """What one run's control group used; nothing when it ran without one."""
        if measured:
            self.run_cpu.observe(cpu_seconds)
            self.run_memory.observe(memory_peak)

    def render(self) -> bytes:
        return generate_latest(self.registry)

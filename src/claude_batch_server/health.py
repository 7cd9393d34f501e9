"""Health checks: the database answers, DATA_DIR takes writes, the agent CLI runs as a job
runs it: as an unprivileged account, with a job's environment and from beneath DATA_DIR;
with EXECUTOR=slurm, a node of the cluster takes jobs (`sinfo`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from claude_batch_server import __version__, accounts
from claude_batch_server.jobs import command
from claude_batch_server.store.db import Database

MIN_FREE_BYTES = 256 * 1024 * 1024
AGENT_CHECK_TTL = 60.0  # `claude --version` starts Node: ask once a minute, not per probe
AGENT_TIMEOUT = 30.0
CLUSTER_CHECK_TTL = 15.0  # seconds a reading of `sinfo` is kept: probes come often
PROBE_ACCOUNT = "nobody"  # no group, no home: what it reaches, every user reaches
NOBODY_ID = 65534
# `cd` as the account: a job starts in its workspace, beneath DATA_DIR/workspaces
PROBE_SCRIPT = 'cd "$1" && exec "$2" --version'


@dataclass(frozen=True)
class HealthReport:
    status: str
    version: str
    checks: dict[str, str]
    cgroup: str  # the flavour of control groups jobs run in: v1, v2 or none


class HealthService:
    def __init__(
        self,
        database: Database,
        data_dir: Path,
        claude_command: str,
        job_dir: Path,
        cgroup: str,
        cluster: Callable[[], str] | None = None,
    ) -> None:
        """`cluster`: with EXECUTOR=slurm, blocking, "ok" or "failing: ..." for the cluster."""
        self._database = database
        self._cluster = cluster
        self._cluster_seen: tuple[float, str] | None = None
        self._cgroup = cgroup
        self._data_dir = data_dir
        self._claude_command = claude_command
        self._job_dir = job_dir
        self._agent: tuple[float, str] | None = None

    async def report(self) -> HealthReport:
        checks = {
            "database": await anyio.to_thread.run_sync(self._check_database),
            "storage": await anyio.to_thread.run_sync(self._check_storage),
            "agent": await anyio.to_thread.run_sync(self.check_agent),
        }
        if self._cluster is not None:
            checks["cluster"] = await anyio.to_thread.run_sync(self._check_cluster)
        healthy = all(value == "ok" for value in checks.values())
        status = "ok" if healthy else "failing"
        return HealthReport(status, __version__, checks, self._cgroup)

    def _check_database(self) -> str:
        try:
            self._database.ping()
        except Exception as error:
            return f"failing: {type(error).__name__}"
        return "ok"

    def _check_storage(self) -> str:
        try:
            with tempfile.NamedTemporaryFile(dir=self._data_dir, prefix=".health-"):
                pass
            free = shutil.disk_usage(self._data_dir).free
        except OSError as error:
            return f"failing: {error.strerror or error}"
        if free < MIN_FREE_BYTES:
            return f"failing: only {free // (1024 * 1024)} MiB free"
        return "ok"

    def _check_cluster(self) -> str:
        now = time.monotonic()
        if self._cluster_seen is None or now - self._cluster_seen[0] > CLUSTER_CHECK_TTL:
            assert self._cluster is not None
            self._cluster_seen = (now, self._cluster())
        return self._cluster_seen[1]

    def check_agent(self) -> str:
        """Blocking: "ok", or "failing: ..." with what stops a job from running the CLI."""
        now = time.monotonic()
        if self._agent is None or now - self._agent[0] > AGENT_CHECK_TTL:
            self._agent = (now, self._run_agent_version())
        return self._agent[1]

    def _run_agent_version(self) -> str:
        # a name is looked up on the job's PATH, not on the server's
        if shutil.which(self._claude_command, path=command.USER_PATH) is None:
            return f"failing: {self._claude_command} not found"
        account = _probe_account()
        try:
            probe = subprocess.run(
                ["/bin/sh", "-c", PROBE_SCRIPT, "sh", str(self._job_dir), self._claude_command],
                env=command.environment(account),
                cwd="/",
                user=account.uid,
                group=account.gid,
                extra_groups=[],
                capture_output=True,
                timeout=AGENT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as error:
            return f"failing: {type(error).__name__}"
        if probe.returncode != 0:
            said = probe.stderr.decode(errors="replace").strip().splitlines()
            why = said[-1][:300] if said else f"exit code {probe.returncode}"
            return f"failing: as {account.name}, {why}"
        return "ok"


def _probe_account() -> accounts.Account:
    found = accounts.lookup(PROBE_ACCOUNT)
    if found is not None:
        return found
    root = Path("/")
    return accounts.Account(PROBE_ACCOUNT, NOBODY_ID, NOBODY_ID, root, "/bin/sh", (NOBODY_ID,), ())

"""Health checks: the database answers, DATA_DIR takes writes, the agent CLI runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from claude_batch_server import __version__
from claude_batch_server.store.db import Database

MIN_FREE_BYTES = 256 * 1024 * 1024
AGENT_CHECK_TTL = 60.0  # `claude --version` starts Node: ask once a minute, not per probe
AGENT_TIMEOUT = 30.0


@dataclass(frozen=True)
class HealthReport:
    status: str
    version: str
    checks: dict[str, str]


class HealthService:
    def __init__(self, database: Database, data_dir: Path, claude_command: str) -> None:
        self._database = database
        self._data_dir = data_dir
        self._claude_command = claude_command
        self._agent: tuple[float, str] | None = None

    async def report(self) -> HealthReport:
        checks = {
            "database": await anyio.to_thread.run_sync(self._check_database),
            "storage": await anyio.to_thread.run_sync(self._check_storage),
            "agent": await anyio.to_thread.run_sync(self._check_agent),
        }
        healthy = all(value == "ok" for value in checks.values())
        return HealthReport("ok" if healthy else "failing", __version__, checks)

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

    def _check_agent(self) -> str:
        now = time.monotonic()
        if self._agent is None or now - self._agent[0] > AGENT_CHECK_TTL:
            self._agent = (now, self._run_agent_version())
        return self._agent[1]

    def _run_agent_version(self) -> str:
        command = shutil.which(self._claude_command)
        if command is None:
            return f"failing: {self._claude_command} not found"
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self._data_dir)}
        try:
            subprocess.run(
                [command, "--version"],
                env=env,
                capture_output=True,
                timeout=AGENT_TIMEOUT,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as error:
            return f"failing: {type(error).__name__}"
        return "ok"

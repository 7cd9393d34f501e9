"""Executors: where a prepared run of a job runs (`base.Executor`), one module per
strategy, chosen by EXECUTOR in `executor_for` alone."""

from __future__ import annotations

from claude_batch_server.errors import ConfigError
from claude_batch_server.jobs.containment import Containment
from claude_batch_server.jobs.executors.base import Executor
from claude_batch_server.jobs.executors.local import LocalExecutor
from claude_batch_server.jobs.sandbox import Sandbox
from claude_batch_server.jobs.spawner_client import SpawnerClient
from claude_batch_server.settings import ExecutorKind, Settings


def executor_for(settings: Settings, containment: Containment, sandbox: Sandbox) -> Executor:
    if settings.EXECUTOR is ExecutorKind.SLURM:
        raise ConfigError("EXECUTOR=slurm: this build has no Slurm executor yet")
    return LocalExecutor(SpawnerClient(), containment, sandbox)

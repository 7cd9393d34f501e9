"""Executors: where a prepared run of a job runs (`base.Executor`), one module per
strategy, chosen by EXECUTOR in `executor_for` alone."""

from __future__ import annotations

from claude_batch_server.cgroups.base import root_name
from claude_batch_server.errors import ConfigError
from claude_batch_server.jobs.containment import Containment
from claude_batch_server.jobs.executors.base import Executor
from claude_batch_server.jobs.executors.local import LocalExecutor
from claude_batch_server.jobs.executors.slurm import Request, Slurm, SlurmError, SlurmExecutor
from claude_batch_server.jobs.sandbox import Sandbox
from claude_batch_server.jobs.spawner_client import SpawnerClient
from claude_batch_server.settings import ExecutorKind, Settings


def executor_for(
    settings: Settings, containment: Containment, sandbox: Sandbox, cluster: Slurm | None = None
) -> Executor:
    """`cluster`: with EXECUTOR=slurm, the one `cluster_for` made (else one is made)."""
    if settings.EXECUTOR is ExecutorKind.SLURM:
        slurm = cluster or cluster_for(settings)
        assert slurm is not None
        return SlurmExecutor(SpawnerClient(), sandbox, slurm, settings.job_memory_max)
    return LocalExecutor(SpawnerClient(), containment, sandbox)


def cluster_for(settings: Settings) -> Slurm | None:
    """With EXECUTOR=slurm, the cluster's commands and what every run asks it for."""
    if settings.EXECUTOR is not ExecutorKind.SLURM:
        return None
    request = Request(
        settings.job_memory_max,
        settings.JOB_CPUS,
        settings.SLURM_PARTITION,
        tuple(settings.slurm_args),
    )
    try:
        return Slurm(request, root_name(settings.DATA_DIR))
    except SlurmError as error:  # Settings checked the tools on PATH; this is a race
        raise ConfigError(f"EXECUTOR=slurm: {error}") from None

"""Slurm tests: the real server runs real jobs through the real Claude Code CLI as steps of
a single-node Slurm cluster of the suite's own (one per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.jobs.conftest import JobWorld, JobWorldFactory, fake_anthropic, job_world
from tests.support.slurm import SlurmCluster, missing_binaries, running_cluster

__all__ = ["fake_anthropic", "job_world"]


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"Slurm is not installed ({', '.join(missing)} missing):"
            " scripts/bootstrap-system.sh test installs slurm-wlm and munge"
        )
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def slurm_world(job_world: JobWorldFactory, slurm: SlurmCluster) -> JobWorldFactory:
    """`slurm_world(**settings)`: a server whose jobs run on the suite's cluster."""

    def make(**settings: str) -> JobWorld:
        env = {"EXECUTOR": "slurm", "SLURM_PARTITION": "batch", "JOB_MEMORY_MAX": "2G"}
        return job_world(**(slurm.env | env | settings))

    return make

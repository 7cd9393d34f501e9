"""Slurm tests: the real server runs real jobs through the real Claude Code CLI as steps of
a single-node Slurm cluster of the suite's own (one per session; a second one, with
accounting, for the tests of what it records)."""

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


@pytest.fixture(scope="session")
def slurm_accounting() -> Iterator[SlurmCluster]:
    """A cluster that keeps accounting: slurmdbd and a MariaDB of its own."""
    missing = missing_binaries(accounting=True)
    if missing:
        pytest.skip(
            f"Slurm's accounting is not installed ({', '.join(missing)} missing):"
            " scripts/bootstrap-system.sh test installs slurmdbd and mariadb-server"
        )
    with running_cluster(accounting=True) as cluster:
        yield cluster


def _world_on(job_world: JobWorldFactory, cluster: SlurmCluster) -> JobWorldFactory:
    def make(**settings: str) -> JobWorld:
        env = {"EXECUTOR": "slurm", "SLURM_PARTITION": "batch", "JOB_MEMORY_MAX": "2G"}
        return job_world(**(cluster.env | env | settings))

    return make


@pytest.fixture
def slurm_world(job_world: JobWorldFactory, slurm: SlurmCluster) -> JobWorldFactory:
    """`slurm_world(**settings)`: a server whose jobs run on the suite's cluster."""
    return _world_on(job_world, slurm)


@pytest.fixture
def accounting_world(job_world: JobWorldFactory, slurm_accounting: SlurmCluster) -> JobWorldFactory:
    """`accounting_world(**settings)`: a server whose jobs run on the cluster with
    accounting."""
    return _world_on(job_world, slurm_accounting)

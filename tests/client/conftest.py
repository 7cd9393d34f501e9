"""The client tests: the real `claude-batch` command against a live server running the
real Claude Code CLI on the fake model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.support import Cli, CliWorld
from tests.fake_anthropic.fixtures import fake_anthropic
from tests.jobs.conftest import JobWorldFactory, job_world

__all__ = ["fake_anthropic", "job_world"]


@pytest.fixture
def cli_world(job_world: JobWorldFactory, tmp_path: Path) -> Iterator[CliWorld]:
    """A live server, a member with a ready repository, and the command logged in as them."""
    world = job_world()
    member = world.member()
    cli = Cli(world.server, tmp_path / "home")
    cli.login(member.user)
    yield CliWorld(world, member, cli)
    cli.close()

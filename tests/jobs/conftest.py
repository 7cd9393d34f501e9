"""Job tests: the real server runs the real Claude Code CLI against the fake model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import Job
from tests.fake_anthropic.fixtures import fake_anthropic
from tests.fake_anthropic.server import FakeAnthropic
from tests.support.api import Api, home_of, make_git_repo
from tests.support.claude_cli import FAKE_API_KEY, claude_path
from tests.support.server import LiveServer, ServerFactory
from tests.support.users import UserFactory

__all__ = ["fake_anthropic"]


def agent_env(fake: FakeAnthropic) -> dict[str, str]:
    """What the server passes on to every job: the fake's address and key, no retries."""
    command = claude_path()
    if command is None:
        pytest.fail("the Claude Code CLI is not installed: run `make agent`")
    return {
        "CLAUDE_COMMAND": str(command),
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }


@dataclass
class JobWorld:
    """A live server, and a way to make users that each own a ready repository."""

    server: LiveServer
    users: UserFactory
    apis: list[Api]

    def member(self, files: dict[str, str] | None = None) -> Api:
        """A new user with a ready repository of their own, named after them."""
        api = Api(self.server, self.users.create())
        self.apis.append(api)
        source = make_git_repo(home_of(api.user), api.user, files)
        api.ready_repository(f"demo-{api.user.name}", source)
        return api


JobWorldFactory = Callable[..., JobWorld]


@pytest.fixture
def job_world(
    server_factory: ServerFactory, users: UserFactory, fake_anthropic: FakeAnthropic
) -> Iterator[JobWorldFactory]:
    """`job_world(**settings)`: a server with those settings, set up to run real jobs."""
    worlds: list[JobWorld] = []

    def make(data_dir: Path | None = None, **settings: str) -> JobWorld:
        env = {"COW_STRATEGY": "copy", **agent_env(fake_anthropic), **settings}
        world = JobWorld(server_factory(data_dir=data_dir, **env), users, [])
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        for api in world.apis:
            api.close()


def add_running_job(database: Database, job_id: str) -> None:
    """A job row in `running`, for the modules that record and follow its transcript."""
    with database.session() as session:
        session.add(
            Job(
                id=job_id,
                user="u",
                repository="r",
                repository_id="r",
                prompt="p",
                run_prompt="p",
                status="running",
            )
        )

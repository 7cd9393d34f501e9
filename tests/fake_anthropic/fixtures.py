"""pytest fixtures for the fake Anthropic API and CLI runs; import them into a conftest.

``fake_anthropic`` is one fake for the whole session: tests keep apart by their
script marker (register scripts under unique names) and by the CLI session id.
``cli_workspace`` gives a non-root OS user (from the root conftest's ``users``
factory) and a working directory that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.claude_cli import claude_env, claude_path
from tests.support.users import UserFactory

from .server import FakeAnthropic


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@dataclass
class CliWorkspace:
    user: pwd.struct_passwd
    cwd: Path
    env: dict[str, str]  # the job environment, pointing at the fake

    @property
    def home(self) -> Path:
        return Path(self.user.pw_dir)

    def own(self, path: Path) -> Path:
        """Give ``path`` to the workspace user (files a test puts in the workspace)."""
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path


@pytest.fixture
def cli_workspace(users: UserFactory, fake_anthropic: FakeAnthropic) -> Iterator[CliWorkspace]:
    if claude_path() is None:
        pytest.skip("the Claude Code CLI is not installed (npm install in the repository)")
    if os.geteuid() != 0:
        pytest.skip("running the CLI as another user needs root")
    entry = pwd.getpwnam(users.create().name)
    cwd = Path(entry.pw_dir) / "work"
    cwd.mkdir()
    os.chown(cwd, entry.pw_uid, entry.pw_gid)
    env = claude_env(entry, fake_anthropic.url, extra={"CLAUDE_CODE_MAX_RETRIES": "0"})
    yield CliWorkspace(entry, cwd, env)
    # the CLI keeps per-user scratch space in /tmp, which userdel -r leaves behind
    shutil.rmtree(f"/tmp/claude-{entry.pw_uid}", ignore_errors=True)

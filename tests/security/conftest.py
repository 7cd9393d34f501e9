"""The security suite: each test counts the attacks it tries; the suite ends with one line
saying how many were tried and whether any got through (the hooks in tests/conftest.py,
which pytest-xdist's controlling process loads)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from claude_batch_server import servergit
from claude_batch_server.accounts import lookup
from tests.fake_anthropic.fixtures import fake_anthropic
from tests.jobs.conftest import job_world
from tests.support.api import git, home_of, make_git_repo
from tests.support.users import OsUser

__all__ = ["fake_anthropic", "job_world"]


class Attacks:
    """`attacks.tried()` once per attempt; a failing assertion afterwards is a breach."""

    def __init__(self) -> None:
        self.count = 0

    def tried(self, n: int = 1) -> None:
        self.count += n


@pytest.fixture
def attacks(request: pytest.FixtureRequest) -> Iterator[Attacks]:
    counter = Attacks()
    yield counter
    # the summary (tests/conftest.py) adds them up, also from the processes of pytest-xdist
    request.node.user_properties.append(("attacks", counter.count))


@dataclass(frozen=True)
class StoredStart:
    """A user's work tree, and root's bare clone of it at its commit (as a stored repository
    is): what `servergit.borrowed` is given."""

    workspace: Path
    start: servergit.Start
    user: servergit.RunAs


def stored_start(owner: OsUser, folder: Path) -> StoredStart:
    """`owner`'s new git repository, and its bare clone in root's `folder`."""
    account = lookup(owner.name)
    assert account is not None
    workspace = make_git_repo(home_of(owner), None)
    stored = folder / "stored.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(workspace), str(stored)], check=True)
    commit = git(workspace, "rev-parse", "HEAD")
    subprocess.run(["chown", "-R", f"{owner.name}:", str(workspace)], check=True)
    start = servergit.Start(stored, commit)
    return StoredStart(workspace, start, servergit.RunAs(account.uid, account.gid))

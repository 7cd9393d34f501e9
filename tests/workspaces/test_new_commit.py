"""A user's first workspace at a commit, after a pull: made like every other (nothing of the
user's is kept per commit but btrfs's base), and still right: the files, owners and modes of
the stored tree, git's index agreeing with it from the start, a change seen as just that."""

from __future__ import annotations

import math
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from claude_batch_server.accounts import Account
from claude_batch_server.settings import CowStrategy
from claude_batch_server.workspaces import WorkspaceEngine, trees
from tests.workspaces.conftest import combinations
from tests.workspaces.helpers import EDITS, GitRepo, as_user, git, owners, tree_state

every = pytest.mark.parametrize(("filesystem", "strategy"), combinations())
AdoptAs = Callable[[GitRepo], Path]
# EDITS, less the file `pull` deletes, and a change to the configuration
AFTER_PULL_EDITS = EDITS.replace("rm data/blob.bin", "rm tools/build.sh") + (
    "git config core.checkStat default\n"
)


@pytest.fixture
def adopt_as_user(
    engine: WorkspaceEngine, data_dir: Path, make_account: Callable[[], Account]
) -> AdoptAs:
    """Clone as a user (the repository's registrant), as the repository service does, then
    adopt: the clone's index then names another owner than root or any workspace's user."""
    registrant = make_account()

    def clone_and_adopt(repo: GitRepo) -> Path:
        staging = data_dir / f"staging-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        # the registrant's own copy of the upstream: git reads no repository of another's
        git(staging, "clone", "--quiet", "--bare", "--no-hardlinks", str(repo.path), "up.git")
        trees.chown_tree(staging, registrant.uid, registrant.gid)
        try:
            as_user(registrant, "git clone --quiet --no-hardlinks up.git tree", staging)
            return engine.adopt_repository(staging / "tree", "repo")
        finally:
            trees.remove_tree(staging)

    return clone_and_adopt


def pull(source: GitRepo, adopt: AdoptAs) -> tuple[str, Path]:
    """A new commit upstream (a change, a new executable, a deletion) and its adoption."""
    (source.path / "data" / "blob.bin").unlink()
    tool = source.path / "tools" / "build.sh"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho build\n")
    tool.chmod(0o755)
    commit = source.commit({"docs/readme.txt": b"read me again\n"}, "third")
    return commit, adopt(source)


@every
def test_first_workspace_at_a_new_commit_is_the_stored_tree_and_git_agrees(
    engine: WorkspaceEngine, adopt_as_user: AdoptAs, source: GitRepo, account: Account
) -> None:
    adopt_as_user(source)
    earlier = engine.create_workspace("repo", source.commits[-1], "job1", account)
    as_user(account, "echo mine >> src/app.py", earlier)
    new, repo = pull(source, adopt_as_user)

    workspace = engine.create_workspace("repo", new, "job2", account)

    assert _without_owner(workspace) == _without_owner(repo)  # bytes, links, modes, times
    assert stat.S_IMODE((workspace / "tools" / "build.sh").stat().st_mode) == 0o755
    assert owners(workspace) == {(account.uid, account.gid)}
    # diff-files compares stat data alone: a file it named, git would have to read again
    checks = "git diff-files --name-only; git rev-parse HEAD; git status --porcelain"
    assert as_user(account, checks, workspace).split() == [new]
    # the same size, written right after the pull: git must see it all the same
    as_user(account, "printf 'print(\"app, 2nd!!!\")\\n' > src/app.py", workspace)
    assert (workspace / "src" / "app.py").stat().st_size == (repo / "src" / "app.py").stat().st_size
    assert as_user(account, "git diff --name-only", workspace).split() == ["src/app.py"]
    assert as_user(account, "git status --porcelain", workspace).split() == ["M", "src/app.py"]


@every
def test_two_users_at_a_new_commit_share_nothing_writable(
    engine: WorkspaceEngine,
    adopt_as_user: AdoptAs,
    source: GitRepo,
    make_account: Callable[[], Account],
) -> None:
    adopt_as_user(source)
    new, repo = pull(source, adopt_as_user)
    alice, bob = make_account(), make_account()
    mine = engine.create_workspace("repo", new, "job1", alice)
    theirs = engine.create_workspace("repo", new, "job2", bob)
    stored, untouched = tree_state(repo), tree_state(theirs)

    # files, folders, modes, and git's own files: index, objects, refs, configuration
    as_user(alice, AFTER_PULL_EDITS, mine)

    assert tree_state(theirs) == untouched
    assert tree_state(repo) == stored
    assert owners(theirs) == {(bob.uid, bob.gid)}
    assert as_user(bob, "git status --porcelain; git rev-parse HEAD", theirs).split() == [new]
    as_user(bob, "echo bob >> docs/readme.txt", theirs)
    assert as_user(alice, "git status --porcelain", mine) == ""  # alice committed hers


def _without_owner(tree: Path) -> dict[str, tuple[object, ...]]:
    """Type, mode, size, mtime and content of every entry but the top (the workspace's is
    0700) and git's index (a workspace's git may refresh it)."""
    return {
        path: (state[0], *state[3:])
        for path, state in tree_state(tree).items()
        if path not in {".", ".git/index"}
    }


@pytest.mark.parametrize(("filesystem", "strategy"), [("disk", "auto")])
def test_adoption_ends_after_the_second_the_clone_wrote_its_files(
    adopt_as_user: AdoptAs, source: GitRepo
) -> None:
    # git compares mtimes in whole seconds: a job's write in the second a file was checked
    # out, keeping its size, would pass for no change
    repo = adopt_as_user(source)

    index_written = (repo / ".git" / "index").stat().st_mtime
    assert time.time() >= math.floor(index_written) + 1
    # the files the index records (git's own, in .git, may be written after it)
    recorded = [path for path in repo.rglob("*") if path.relative_to(repo).parts[0] != ".git"]
    assert recorded
    assert all(math.floor(path.lstat().st_mtime) <= math.floor(index_written) for path in recorded)


@pytest.mark.parametrize(("filesystem", "strategy"), [("disk", "overlay")])
def test_a_repository_stored_by_an_older_version_gets_the_configuration_at_start(
    adopt_as_user: AdoptAs, source: GitRepo, account: Account, data_dir: Path
) -> None:
    repo = adopt_as_user(source)
    config = repo / ".git" / "config"
    config.write_text(config.read_text().replace("\tcheckStat = minimal\n", ""))

    restarted = WorkspaceEngine(data_dir, CowStrategy.OVERLAY)

    assert "\tcheckStat = minimal\n" in config.read_text()
    workspace = restarted.create_workspace("repo", source.commits[-1], "job1", account)
    assert as_user(account, "git diff-files --name-only", workspace) == ""

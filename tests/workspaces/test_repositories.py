"""Stored repositories: adopted sealed, swapped atomically by a pull, removed, while the
workspaces made from them keep working."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from claude_batch_server import servergit
from claude_batch_server.accounts import Account
from claude_batch_server.workspaces import WorkspaceEngine, WorkspaceError
from claude_batch_server.workspaces import engine as engine_module
from tests.workspaces.conftest import combinations
from tests.workspaces.helpers import GitRepo, as_user, git, is_subvolume, owners, tree_state

Adopt = Callable[..., Path]
every = pytest.mark.parametrize(("filesystem", "strategy"), combinations())
# The strategy does not matter to adoption, the filesystem does.
each_filesystem = pytest.mark.parametrize(
    ("filesystem", "strategy"), [("disk", "auto"), ("xfs", "auto"), ("btrfs", "auto")]
)


def assert_start(engine: WorkspaceEngine, job_id: str, source: GitRepo, commit: str) -> None:
    """The job's start commit is read from a git dir of the server's, not its workspace."""
    start = engine.start_of(job_id)
    assert start is not None and start.commit == commit
    assert not start.git_dir.is_relative_to(engine.workspace_path(job_id))
    assert start.git_dir.stat().st_uid == 0
    tree = servergit.run(["rev-parse", "--verify", f"{commit}^{{tree}}"], git_dir=start.git_dir)
    assert tree.decode().strip() == git(source.path, "rev-parse", f"{commit}^{{tree}}")


@each_filesystem
def test_adopted_clone_is_sealed_and_its_source_untouched(
    engine: WorkspaceEngine, source: GitRepo, account: Account, data_dir: Path
) -> None:
    # The user's own copy of the upstream, on the same filesystem: a local clone of it
    # hard-links the objects, which adoption must not take over.
    home = data_dir / "home"
    home.mkdir()
    os.chown(home, account.uid, account.gid)
    upstream = home / "upstream"
    git(home, "clone", "--quiet", "--bare", str(source.path), str(upstream))
    subprocess.run(["chown", "-R", f"{account.uid}:{account.gid}", str(upstream)], check=True)
    upstream_before = tree_state(upstream)
    staging = data_dir / "staging"
    staging.mkdir(mode=0o711)
    os.chown(staging, account.uid, account.gid)
    as_user(
        account,
        f"""
        git clone --quiet {upstream} tree
        chmod g+w,o+w tree/src/app.py && chmod u+s,g+w tree/bin/run.sh && chmod 1777 tree/data
        mkfifo tree/pipe
        """,
        staging,
    )
    assert as_user(account, "find tree/.git/objects -type f -links +1 | head -1", staging)

    repo = engine.adopt_repository(staging / "tree", "repo")

    assert repo == data_dir / "repos" / "repo"
    assert not (staging / "tree").exists()
    assert owners(repo) == {(0, 0)}
    for directory, dirs, files in os.walk(repo):
        for name in dirs + files:
            st = Path(directory, name).lstat()
            assert st.st_nlink == 1 or stat.S_ISDIR(st.st_mode), name
            assert stat.S_ISLNK(st.st_mode) or st.st_mode & 0o7022 == 0, name
    assert not (repo / "pipe").exists()
    assert git(repo, "rev-parse", "HEAD") == source.commits[-1]
    assert tree_state(upstream) == upstream_before


@pytest.mark.parametrize(("filesystem", "strategy"), [("btrfs", "auto"), ("btrfs", "copy")])
def test_on_btrfs_the_stored_repository_is_a_subvolume(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo
) -> None:
    assert is_subvolume(adopt(source))


@every
def test_pull_swaps_the_repository_and_keeps_workspaces(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account, data_dir: Path
) -> None:
    adopt(source)
    old = source.commits[-1]
    workspace = engine.create_workspace("repo", old, "job1", account)
    as_user(account, "echo mine > note.txt", workspace)
    new = source.commit({"src/app.py": b"print('third')\n"}, "third")

    repo = adopt(source)  # a pull: a fresh clone replaces the stored one

    assert git(repo, "rev-parse", "HEAD") == new
    assert_start(engine, "job1", source, old)
    engine.restore_workspace("job1")
    assert (workspace / "src" / "app.py").read_text() == "print('app, second')\n"
    assert as_user(account, "git rev-parse HEAD; cat note.txt", workspace).split() == [old, "mine"]
    later = engine.create_workspace("repo", new, "job2", account)
    assert (later / "src" / "app.py").read_text() == "print('third')\n"

    engine.remove_workspace("job1")
    engine.remove_workspace("job2")
    assert not any((data_dir / "cow" / "kept").iterdir())
    assert not any((data_dir / "cow" / "bases").iterdir())


@every
def test_removed_repository_leaves_workspaces_working(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account, data_dir: Path
) -> None:
    adopt(source)
    workspace = engine.create_workspace("repo", source.commits[-1], "job1", account)

    engine.remove_repository("repo")
    engine.remove_repository("repo")  # again: nothing to do

    assert not (data_dir / "repos" / "repo").exists()
    engine.restore_workspace("job1")
    assert as_user(account, "git log --oneline | wc -l", workspace).strip() == "2"
    assert_start(engine, "job1", source, source.commits[-1])
    with pytest.raises(WorkspaceError, match="missing"):
        engine.create_workspace("repo", source.commits[-1], "job2", account)
    engine.remove_workspace("job1")
    assert not any((data_dir / "cow" / "kept").iterdir())


@each_filesystem
def test_staging_outside_the_data_dir_is_refused(
    engine: WorkspaceEngine, source: GitRepo, tmp_path: Path
) -> None:
    outside = tmp_path / "tree"
    subprocess.run(["git", "clone", "--quiet", str(source.path), str(outside)], check=True)

    with pytest.raises(WorkspaceError, match="not a staging directory"):
        engine.adopt_repository(outside, "repo")
    assert (outside / ".git").is_dir()


@each_filesystem
def test_a_tree_whose_git_folder_is_a_link_is_refused(
    engine: WorkspaceEngine, source: GitRepo, data_dir: Path
) -> None:
    staging = data_dir / "staging"
    staging.mkdir()
    subprocess.run(["git", "clone", "--quiet", str(source.path), str(staging / "real")], check=True)
    (staging / "tree").mkdir()
    (staging / "tree" / ".git").symlink_to(staging / "real" / ".git")

    with pytest.raises(WorkspaceError, match="not a git checkout"):
        engine.adopt_repository(staging / "tree", "repo")
    assert not (data_dir / "repos" / "repo").exists()


@every
def test_after_a_pull_the_old_commit_is_refused_unless_a_workspace_keeps_it(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account
) -> None:
    adopt(source)
    old = source.commits[-1]
    engine.create_workspace("repo", old, "job1", account)
    new = source.commit({"src/app.py": b"print('third')\n"}, "third")
    adopt(source)

    # job1 started at the old tree (an overlay reads it still): it is kept
    kept = engine.create_workspace("repo", old, "job2", account)
    assert (kept / "src" / "app.py").read_text() == "print('app, second')\n"
    engine.remove_workspace("job2")
    engine.remove_workspace("job1")
    with pytest.raises(WorkspaceError, match=f"at {new}, not at {old}"):
        engine.create_workspace("repo", old, "job3", account)


@each_filesystem
def test_workspaces_need_no_git_run_once_the_repository_is_stored(
    engine: WorkspaceEngine,
    adopt: Adopt,
    source: GitRepo,
    account: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adopt(source)
    asked: list[Path] = []
    monkeypatch.setattr(engine_module, "_head", lambda tree: asked.append(tree))

    engine.create_workspace("repo", source.commits[-1], "job1", account)
    with pytest.raises(WorkspaceError, match="not at"):
        engine.create_workspace("repo", source.commits[0], "job2", account)

    assert asked == []


@each_filesystem
def test_a_repository_stored_without_a_note_of_its_commit_asks_git(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account
) -> None:
    repo = adopt(source)
    os.removexattr(repo, "trusted.claude-batch-server.head")  # as stored by older versions

    engine.create_workspace("repo", source.commits[-1], "job1", account)
    with pytest.raises(WorkspaceError, match=f"at {source.commits[-1]}, not at"):
        engine.create_workspace("repo", source.commits[0], "job2", account)


@each_filesystem
def test_a_note_the_staged_tree_brings_is_replaced(
    engine: WorkspaceEngine, source: GitRepo, account: Account, data_dir: Path
) -> None:
    staging = data_dir / "staging"
    staging.mkdir()
    subprocess.run(["git", "clone", "--quiet", str(source.path), str(staging / "tree")], check=True)
    os.setxattr(staging / "tree", "trusted.claude-batch-server.head", source.commits[0].encode())

    engine.adopt_repository(staging / "tree", "repo")

    with pytest.raises(WorkspaceError, match="not at"):
        engine.create_workspace("repo", source.commits[0], "job1", account)
    engine.create_workspace("repo", source.commits[-1], "job2", account)


@pytest.mark.parametrize(("filesystem", "strategy"), [("disk", "auto")])
def test_adopted_git_dir_is_the_servers_own(
    engine: WorkspaceEngine, source: GitRepo, account: Account, data_dir: Path
) -> None:
    """What the clone's maker put in its git dir before it was sealed: a configuration that
    runs commands, hooks, attributes, alternates (through a symlinked folder whose files
    must stay), a repository below the top. None of it is stored; the history is."""
    bait = data_dir / "bait"
    bait.mkdir()
    (bait / "alternates").write_text("/somewhere/else\n")
    staging = data_dir / "staging"
    staging.mkdir(mode=0o711)
    git(staging, "clone", "--quiet", str(source.path), "tree")
    subprocess.run(["chown", "-R", f"{account.uid}:{account.gid}", str(staging)], check=True)
    as_user(
        account,
        """
        git -C tree config core.fsmonitor /tmp/evil && git -C tree config include.path /tmp/x
        mkdir -p tree/.git/hooks tree/.git/info tree/sub/.git
        echo 'exit 1' > tree/.git/hooks/pre-commit && echo '* filter=x' > tree/.git/info/attributes
        echo 'gitdir: /tmp' > tree/docs.git && echo '[core]' > tree/sub/.git/config
        """,
        staging,
    )
    info = staging / "tree" / ".git" / "objects" / "info"
    subprocess.run(["rm", "-rf", str(info)], check=True)
    info.symlink_to(bait)
    head = as_user(account, "git -C tree rev-parse HEAD", staging).strip()

    repo = engine.adopt_repository(staging / "tree", "repo")

    git_dir = repo / ".git"
    kept = {"HEAD", "config", "index", "objects", "packed-refs", "refs", "shallow"}
    assert {path.name for path in git_dir.iterdir()} <= kept
    config = (git_dir / "config").read_text()
    assert "fsmonitor" not in config and "include" not in config
    assert not (git_dir / "objects" / "info").exists()
    assert (bait / "alternates").read_text() == "/somewhere/else\n"
    assert not (repo / "sub" / ".git").exists() and (repo / "docs.git").exists()
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == "?? docs.git"  # content, not a git dir

"""A workspace is the repository at its commit, the user's own, and changes nothing else.
Each test runs with every strategy on every filesystem where that strategy works."""

from __future__ import annotations

import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from claude_batch_server.accounts import Account
from claude_batch_server.workspaces import WorkspaceEngine, WorkspaceError, idmap, linux
from claude_batch_server.workspaces.overlay import OverlayStrategy
from tests.workspaces.conftest import combinations
from tests.workspaces.helpers import EDITS, GitRepo, as_user, owners, tree_state

every = pytest.mark.parametrize(("filesystem", "strategy"), combinations())
Adopt = Callable[..., Path]


@every
def test_workspace_is_the_repository_at_its_commit(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account
) -> None:
    repo = adopt(source)
    workspace = engine.create_workspace("repo", source.commits[-1], "job1", account)

    assert workspace == engine.workspace_path("job1")
    assert _contents(workspace) == _contents(repo)
    assert (workspace / "bin" / "run.sh").stat().st_mode & 0o777 == 0o755
    head = as_user(account, "git rev-parse HEAD && git status --porcelain", workspace)
    assert head.split() == [source.commits[-1]]  # git trusts the tree, and nothing changed


@every
def test_workspace_and_everything_in_it_belong_to_the_user(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account, data_dir: Path
) -> None:
    adopt(source)
    workspace = engine.create_workspace("repo", source.commits[-1], "job1", account)

    top = workspace.stat()
    assert (top.st_uid, top.st_gid, stat.S_IMODE(top.st_mode)) == (account.uid, account.gid, 0o700)
    assert owners(workspace) == {(account.uid, account.gid)}
    assert stat.S_IMODE((data_dir / "workspaces").stat().st_mode) == 0o711
    assert stat.S_IMODE((data_dir / "repos").stat().st_mode) == 0o700


@every
def test_changes_by_the_user_leave_the_repository_untouched(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account
) -> None:
    repo = adopt(source)
    before = tree_state(repo)
    workspace = engine.create_workspace("repo", source.commits[-1], "job1", account)

    as_user(account, EDITS, workspace)

    assert tree_state(repo) == before
    assert (workspace / "src" / "app.py").read_text() == "rewritten\n"
    assert not (workspace / "data" / "blob.bin").exists()
    assert (workspace / "src" / "package" / "deep" / "module.py").stat().st_mode & 0o777 == 0o600
    changed = as_user(account, f"git diff --name-status {source.commits[-1]}", workspace)
    assert "D\tdata/blob.bin" in changed
    assert "M\tsrc/app.py" in changed
    assert owners(workspace) == {(account.uid, account.gid)}


@every
def test_workspaces_do_not_see_each_other(
    engine: WorkspaceEngine,
    adopt: Adopt,
    source: GitRepo,
    make_account: Callable[[], Account],
) -> None:
    adopt(source)
    alice, bob = make_account(), make_account()
    first = engine.create_workspace("repo", source.commits[-1], "job1", alice)
    second = engine.create_workspace("repo", source.commits[-1], "job2", alice)
    third = engine.create_workspace("repo", source.commits[-1], "job3", bob)
    untouched = tree_state(second)

    as_user(alice, EDITS, first)

    assert tree_state(second) == untouched
    assert (third / "src" / "app.py").read_bytes() == (second / "src" / "app.py").read_bytes()
    assert owners(third) == {(bob.uid, bob.gid)}
    as_user(bob, "test ! -r ../job1/src/app.py", third)  # no way into another's workspace


@every
def test_remove_leaves_nothing_behind(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account, data_dir: Path
) -> None:
    adopt(source)
    for job in ("job1", "job2"):
        engine.create_workspace("repo", source.commits[-1], job, account)

    engine.remove_workspace("job1")
    engine.remove_workspace("job2")
    engine.remove_workspace("job2")  # again: nothing to do

    assert not (data_dir / "workspaces" / "job1").exists()
    assert list((data_dir / "workspaces").iterdir()) == []
    assert list((data_dir / "cow" / "jobs").iterdir()) == []
    assert list((data_dir / "cow" / "bases").iterdir()) == []
    assert linux.mounts_beneath(data_dir) == []


@every
def test_removal_never_follows_links_out_and_deletes_read_only_entries(
    engine: WorkspaceEngine,
    adopt: Adopt,
    source: GitRepo,
    account: Account,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    repo = adopt(source)
    before = tree_state(repo)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    workspace = engine.create_workspace("repo", source.commits[-1], "job1", account)
    as_user(
        account,
        f"""
        ln -s {outside} escape
        ln -s {outside}/keep.txt escape-file
        ln -s {repo} into-repo
        mkdir -p locked/inner && touch locked/inner/file && chmod 000 locked/inner locked
        chmod 444 README.md docs/readme.txt && chmod 500 docs
        """,
        workspace,
    )

    engine.remove_workspace("job1")

    assert not workspace.exists()
    assert (outside / "keep.txt").read_text() == "keep"
    assert tree_state(repo) == before


@every
def test_interrupted_attempt_is_replaced(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account
) -> None:
    adopt(source)
    workspace = engine.create_workspace("repo", source.commits[-1], "job1", account)
    (workspace / "stale").write_text("from an attempt that died")

    again = engine.create_workspace("repo", source.commits[-1], "job1", account)

    assert again == workspace
    assert not (workspace / "stale").exists()


@every
def test_a_commit_the_repository_is_not_at_is_refused(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account
) -> None:
    adopt(source)

    with pytest.raises(WorkspaceError, match="not at"):
        engine.create_workspace("repo", source.commits[0], "job1", account)
    with pytest.raises(WorkspaceError, match="invalid job id"):
        engine.create_workspace("repo", source.commits[-1], "../escape", account)
    assert not engine.workspace_path("job1").exists()


@every
def test_restore_is_harmless_and_keeps_the_work(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account
) -> None:
    adopt(source)
    workspace = engine.create_workspace("repo", source.commits[-1], "job1", account)
    as_user(account, "echo kept > note.txt", workspace)

    engine.restore_workspace("job1")

    assert (workspace / "note.txt").read_text() == "kept\n"
    with pytest.raises(WorkspaceError):
        engine.restore_workspace("no-such-job")


@every
def test_concurrent_creation(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account
) -> None:
    adopt(source)
    jobs = [f"job{n}" for n in range(6)]

    with ThreadPoolExecutor(len(jobs)) as pool:
        made = list(
            pool.map(
                lambda job: engine.create_workspace("repo", source.commits[-1], job, account),
                jobs,
            )
        )

    for workspace in made:
        assert (workspace / "src" / "app.py").read_text() == "print('app, second')\n"
        assert owners(workspace) == {(account.uid, account.gid)}


def _contents(tree: Path) -> dict[str, object]:
    """Bytes and link targets by path; git's index aside, whose stat data may be refreshed."""
    ignored = {".", ".git/index"}
    return {path: state[5] for path, state in tree_state(tree).items() if path not in ignored}


@pytest.mark.parametrize(("filesystem", "strategy"), combinations("btrfs", "overlay"))
def test_git_index_agrees_with_the_files_from_the_start(
    engine: WorkspaceEngine,
    adopt: Adopt,
    source: GitRepo,
    make_account: Callable[[], Account],
) -> None:
    # diff-files compares stat data only: every file it names, git's first status re-reads
    adopt(source)
    alice, bob = make_account(), make_account()
    for job, owner in (("job1", alice), ("job2", alice), ("job3", bob)):
        workspace = engine.create_workspace("repo", source.commits[-1], job, owner)
        assert as_user(owner, "git diff-files --name-only", workspace) == "", job


@pytest.mark.parametrize(("filesystem", "strategy"), combinations("overlay"))
def test_each_user_gets_their_own_mapping_made_once(
    engine: WorkspaceEngine,
    adopt: Adopt,
    source: GitRepo,
    make_account: Callable[[], Account],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adopt(source)
    alice, bob = make_account(), make_account()
    made: list[tuple[int, int]] = []
    make = idmap._new_user_namespace

    def counted(uid: int, gid: int) -> int:
        made.append((uid, gid))
        return make(uid, gid)

    monkeypatch.setattr(idmap, "_new_user_namespace", counted)
    jobs = [("job1", alice), ("job2", bob), ("job3", alice), ("job4", bob)]
    for job, owner in jobs:
        workspace = engine.create_workspace("repo", source.commits[-1], job, owner)
        as_user(owner, "echo mine >> src/app.py && touch new.txt", workspace)
        assert owners(workspace) == {(owner.uid, owner.gid)}, job

    assert len(made) == len(set(made)) <= 2  # at most once per user in a process


@pytest.mark.parametrize(("filesystem", "strategy"), combinations("overlay"))
@pytest.mark.parametrize("detached", [True, False])
def test_overlay_with_the_idmapped_layer_detached_or_attached(
    engine: WorkspaceEngine,
    adopt: Adopt,
    source: GitRepo,
    account: Account,
    detached: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # False is what a kernel that refuses a detached mount as a layer ends up using
    monkeypatch.setattr(OverlayStrategy, "detached_layers", detached)
    adopt(source)
    workspace = engine.create_workspace("repo", source.commits[-1], "job1", account)
    as_user(account, EDITS, workspace)

    assert owners(workspace) == {(account.uid, account.gid)}
    assert linux.mounts_beneath(workspace) == [workspace]  # the layer is attached nowhere
    engine.remove_workspace("job1")
    assert not workspace.exists()

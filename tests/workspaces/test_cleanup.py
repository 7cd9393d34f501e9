"""What removal and collection must cope with beyond plain files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from claude_batch_server.accounts import Account
from claude_batch_server.workspaces import WorkspaceEngine, linux, trees
from tests.workspaces.helpers import GitRepo, as_user, is_subvolume

Adopt = Callable[..., Path]


@pytest.mark.skipif(shutil.which("btrfs") is None, reason="btrfs-progs is not installed")
@pytest.mark.parametrize(("filesystem", "strategy"), [("btrfs", "btrfs"), ("btrfs", "copy")])
def test_subvolumes_made_by_the_user_are_removed(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account, data_dir: Path
) -> None:
    adopt(source)
    workspace = engine.create_workspace("repo", source.commits[-1], "job1", account)
    as_user(
        account,
        """
        btrfs -q subvolume create nested
        btrfs -q subvolume create nested/deeper
        echo data > nested/deeper/file
        btrfs -q subvolume snapshot -r nested/deeper frozen
        """,
        workspace,
    )
    assert is_subvolume(workspace / "nested" / "deeper")

    engine.remove_workspace("job1")

    assert not workspace.exists()
    assert not any((data_dir / "cow" / "bases").iterdir())


@pytest.mark.parametrize(("filesystem", "strategy"), [("disk", "auto"), ("btrfs", "btrfs")])
def test_collect_drops_leftovers_of_dead_processes(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account, data_dir: Path
) -> None:
    adopt(source)
    engine.create_workspace("repo", source.commits[-1], "job1", account)
    dead = data_dir / "cow" / "tmp" / "999999999-leftover"
    (dead / "tree").mkdir(parents=True)
    (dead / "tree" / "file").write_text("half-made")

    engine.collect()

    assert not dead.exists()
    assert (data_dir / "workspaces" / "job1" / "src" / "app.py").exists()


@pytest.mark.parametrize("filesystem", ["disk"])
def test_mounts_beneath_are_found_by_their_real_names(data_dir: Path) -> None:
    # mountinfo escapes ' ' and '\'; "a" is a prefix of "a b" but not its parent
    top, sibling = data_dir / "a b", data_dir / "a"
    inner = top / "in\\side"
    inner.mkdir(parents=True)
    sibling.mkdir()
    for point in (inner, inner, sibling):  # two stacked on one point
        linux.mount("tmpfs", point, "tmpfs", 0, "size=1m")

    assert linux.mounts_beneath(top) == [inner, inner]
    assert linux.mounts_beneath(sibling) == [sibling]
    assert linux.is_mount_point(inner)
    assert not linux.is_mount_point(top)
    trees.remove_tree(top)
    trees.remove_tree(sibling)
    trees.remove_tree(top)  # gone: nothing to do

    assert not top.exists()
    assert not sibling.exists()
    assert linux.mounts_beneath(data_dir) == []

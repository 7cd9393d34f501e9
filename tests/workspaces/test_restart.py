"""After a restart, overlay workspaces are mounted again; nothing of the work is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from claude_batch_server.accounts import Account
from claude_batch_server.settings import CowStrategy
from claude_batch_server.workspaces import WorkspaceEngine, linux
from tests.workspaces.conftest import combinations
from tests.workspaces.helpers import GitRepo, as_user

Adopt = Callable[..., Path]


@pytest.mark.parametrize(("filesystem", "strategy"), combinations("overlay"))
def test_unmounted_overlay_is_restored(
    engine: WorkspaceEngine, adopt: Adopt, source: GitRepo, account: Account, data_dir: Path
) -> None:
    adopt(source)
    workspace = engine.create_workspace("repo", source.commits[-1], "job1", account)
    as_user(account, "echo kept > note.txt && rm data/blob.bin", workspace)
    linux.unmount(workspace)  # what a restart of the machine does
    assert not (workspace / "src").exists()

    restarted = WorkspaceEngine(data_dir, CowStrategy.AUTO)  # whatever it picks now
    restarted.restore_workspace("job1")
    restarted.restore_workspace("job1")  # mounted already: nothing to do

    assert linux.is_mount_point(workspace)
    assert (workspace / "note.txt").read_text() == "kept\n"
    assert not (workspace / "data" / "blob.bin").exists()
    assert as_user(account, "git status --porcelain", workspace).split() == [
        "D",
        "data/blob.bin",
        "??",
        "note.txt",
    ]
    assert linux.mounts_beneath(data_dir) == [workspace]
    restarted.remove_workspace("job1")
    assert linux.mounts_beneath(data_dir) == []

"""git's index records the stat data (owner, ctime, inode, ...) of every file it tracks.
Where a workspace's files disagree with it -- a chowned snapshot, an idmapped overlay
whose stored index names root as the owner -- git reads every file again on its first
`git status`, and Claude Code runs one as each session starts: seconds for a large tree.
So the index is refreshed once per user and commit, and the refreshed one reused."""

from __future__ import annotations

import subprocess
from pathlib import Path

from claude_batch_server.workspaces.base import GIT_ENV


def refresh(tree: Path, uid: int, gid: int) -> None:
    """Bring the index of the checkout `tree` up to date with its files, as the user.

    As the user, because git may run filters the repository configures, which root must
    not. A failure costs only speed (git refreshes on its next status), so it is ignored."""
    subprocess.run(
        ["git", "update-index", "-q", "--refresh"],
        cwd=tree,
        user=uid,
        group=gid,
        extra_groups=[],
        env=GIT_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )

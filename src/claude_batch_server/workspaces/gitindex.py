"""git's index records the stat data (owner, ctime, inode, ...) of every file it tracks.
Where a workspace's files disagree with it -- a chowned snapshot, an idmapped overlay
whose stored index names root as the owner -- git reads every file again on its first
`git status`, and Claude Code runs one as each session starts: seconds for a large tree.
So the first workspace of a user at a commit refreshes the index, as that user, and the
strategy hands the result to the user's later workspaces."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from claude_batch_server import servergit
from claude_batch_server.workspaces import trees
from claude_batch_server.workspaces.linux import opened

_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def refresh(workspace: Path, uid: int, gid: int) -> None:
    """Bring the index of `workspace` up to date with its files, as the user (`workspace`
    must be a path the user can reach) and with the server's configuration, never the
    workspace's (`servergit`). A failure costs only speed (git refreshes on its next
    status), so it is not an error."""
    user = servergit.RunAs(uid, gid)
    with servergit.borrowed(workspace, user) as git:
        index = {"GIT_INDEX_FILE": str(workspace / ".git" / "index")}
        with contextlib.suppress(servergit.GitError):
            git.run(["update-index", "-q", "--refresh"], env=index)


def save(workspace: Path, directory: Path, name: str, uid: int, gid: int) -> None:
    """Copy the index of `workspace` to `directory`/`name`, if it has one. The user writes
    the workspace: no symlink is followed, only a regular file is taken."""
    try:
        with (
            opened(workspace) as top,
            opened(".git", dir_fd=top) as git_dir,
            opened("index", _READ_FLAGS, git_dir) as index,
        ):
            if stat.S_ISREG(os.fstat(index).st_mode):
                _install(index, directory, name, uid, gid)
    except OSError:  # none (not a checkout, or moved away by the user): only speed is lost
        return


def place(index: Path, directory: Path, name: str, uid: int, gid: int) -> None:
    """Copy the kept index file `index` (root's) to `directory`/`name`."""
    with opened(index, _READ_FLAGS) as source:
        _install(source, directory, name, uid, gid)


def _install(source: int, directory: Path, name: str, uid: int, gid: int) -> None:
    """Write `directory`/`name` (a root-only place, opened without following a symlink)
    whole, owned by uid:gid, in one step: a racing job sees the old file or the new one.
    A reflink where the filesystem has them: an index is megabytes for a large tree."""
    temporary = f".{name}.{secrets.token_hex(4)}"
    with opened(directory) as directory_fd:
        with opened(temporary, _CREATE_FLAGS, directory_fd, 0o644) as target:
            trees.clone_or_copy(source, target)
            os.fchown(target, uid, gid)
        os.rename(temporary, name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)

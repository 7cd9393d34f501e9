"""git's index records the stat data (owner, ctime, inode, ...) of every file it tracks.
Where a workspace's files disagree with it -- a chowned snapshot, an idmapped overlay
whose stored index names root as the owner -- git reads every file again on its first
`git status`, and Claude Code runs one as each session starts: seconds for a large tree.
So the first workspace of a user at a commit refreshes the index, as that user, and the
strategy hands the result to the user's later workspaces."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Final

from claude_batch_server.workspaces.base import GIT_ENV
from claude_batch_server.workspaces.linux import opened

_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def refresh(workspace: Path, uid: int, gid: int) -> bytes | None:
    """Bring the index of `workspace` up to date with its files; its bytes, or None where
    there is none. git runs as the user -- it may run filters the repository configures,
    which root must not -- so `workspace` must be a path the user can reach. A failure
    costs only speed (git refreshes on its next status), so it is not an error."""
    subprocess.run(
        ["git", "update-index", "-q", "--refresh"],
        cwd=workspace,
        user=uid,
        group=gid,
        extra_groups=[],
        env=GIT_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    try:
        return _read_index(workspace)
    except OSError:
        return None


def _read_index(workspace: Path) -> bytes:
    # The user writes the workspace: follow no symlink, accept only a regular file.
    with (
        opened(workspace) as top,
        opened(".git", dir_fd=top) as git_dir,
        opened("index", _READ_FLAGS, git_dir) as fd,
    ):
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file: {workspace}/.git/index")
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()


def store(directory: Path, name: str, index: bytes, uid: int, gid: int) -> None:
    """Write `directory`/`name` whole, owned by uid:gid, in one step: a job racing this
    one sees the old file or the new, never half of one. `directory` is root's, and is
    opened without following a symlink in its place."""
    temporary = f".{name}.{secrets.token_hex(4)}"
    with opened(directory) as directory_fd:
        with opened(temporary, _CREATE_FLAGS, directory_fd, 0o644) as fd:
            os.fchown(fd, uid, gid)
            with os.fdopen(fd, "wb", closefd=False) as file:
                file.write(index)
        os.rename(temporary, name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)

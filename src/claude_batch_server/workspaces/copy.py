"""The last resort: a real copy of the whole tree for every job. Works on any filesystem;
costs time and disk in proportion to the repository. Never hard links: a tool that writes
a file in place through a hard link would change the stored repository."""

from __future__ import annotations

from pathlib import Path

from claude_batch_server.workspaces import trees
from claude_batch_server.workspaces.base import Workspace


class CopyStrategy:
    name = "copy"
    keeps_source = False

    def works(self, scratch: Path) -> bool:
        return True

    def create(self, workspace: Workspace) -> None:
        # Built in the job's private state, then renamed into place: the workspace path
        # never shows a half-made tree, and the user cannot reach it before it is done.
        build = workspace.state / "build"
        build.mkdir(mode=0o700)
        trees.clone_tree(workspace.source, build, workspace.uid, workspace.gid, self.copy_file)
        build.chmod(0o700)
        build.rename(workspace.target)

    def writable(self, workspace: Workspace) -> list[Path]:
        return [workspace.target]

    def restore(self, workspace: Workspace) -> None:
        """Nothing to do: a plain directory outlives the server."""

    def copy_file(self, source_fd: int, target_fd: int) -> None:
        trees.copy_data(source_fd, target_fd)

"""btrfs: every stored repository is a subvolume, and a workspace is a writable snapshot,
made in constant time whatever the size of the tree.

Ownership would cost a chown per file in every snapshot, so it is paid once: the first job
of a user at a commit snapshots the repository into a *base* (`Workspace.base`, one per repo,
commit and uid), and gives the base to the user; each job then snapshots that base. The
chown changes every file's owner and ctime, which git's index need not know: the stored
configuration makes git compare only mtime, size and mode (`servergit`), so the stored
index holds as it is. A snapshot is independent of its origin, so a pull that replaces the
repository leaves bases and workspaces alone; the engine drops a base once no workspace of
it is left.

The chown unshares every metadata block of the base: its first job costs seconds and
about 5% of the repository in disk per user and commit, which is why `auto` prefers the
overlay strategy even on btrfs (see `registry`).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from claude_batch_server.workspaces import linux, trees
from claude_batch_server.workspaces.base import Workspace


class BtrfsStrategy:
    name = "btrfs"
    keeps_source = False

    def works(self, scratch: Path) -> bool:
        try:
            linux.create_subvolume(scratch / "volume")
            linux.snapshot(scratch / "volume", scratch / "snapshot")
        except OSError:
            return False
        return True

    def create(self, workspace: Workspace) -> None:
        if not workspace.base.exists():
            _make_base(workspace)
        linux.snapshot(workspace.base, workspace.target)

    def writable(self, workspace: Workspace) -> list[Path]:
        return [workspace.target]

    def restore(self, workspace: Workspace) -> None:
        """Nothing to do: a subvolume outlives the server."""


def store(tree: Path, target: Path) -> None:
    """Make `target` a new subvolume holding `tree` (sealed, root's), sharing its extents."""
    linux.create_subvolume(target)
    trees.clone_tree(tree, target, 0, 0, linux.ficlone)


def _make_base(workspace: Workspace) -> None:
    """The first workspace of a user at a commit: a snapshot of the repository, given to the
    user, published only once whole, so no job ever snapshots a base half-made."""
    build = workspace.base.with_name(f"{workspace.base.name}.build-{secrets.token_hex(4)}")
    build.parent.mkdir(mode=0o700, exist_ok=True)
    try:
        linux.snapshot(workspace.source, build)
        trees.chown_tree(build, workspace.uid, workspace.gid)
        build.chmod(0o700)
        build.rename(workspace.base)
    except OSError:
        if not workspace.base.exists():
            raise
        # a job of the same user published a base first: theirs serves this job too
    finally:
        trees.remove_tree(build)

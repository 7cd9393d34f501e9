"""overlayfs: the stored tree is the read-only lower layer, and each job writes only into an
upper layer of its own; works on ext4, XFS and btrfs alike, in constant time.

Ownership. The lower layer is root's, and the job's user must own and be able to change
every file. Two ways were measured (docs/benchmarks.md, "Workspaces"):

* a per-user base, a chowned full copy of the tree per (repo, commit, uid) as the lower
  layer: on ext4 a real copy, i.e. what `cp -a` + `chown -R` costs -- 19 s on this disk
  for 20,000 files / 500 MB, and the whole repository again in disk, for the first job
  of each user at each commit;
* an *idmapped* lower layer (chosen): the stored tree is bind-mounted with the mapping
  "root -> the job's user", so every file in it appears owned by that user, and overlayfs
  (Linux 5.19+) copies a file up into the upper layer, owned by the user on disk, when it
  is first changed. Nothing is copied or chowned, one stored tree serves every user, and
  a workspace is ready in 6-20 ms at 20,000 and at 100,000 files. The price is the mount
  itself, which a restart undoes: hence `restore`.

git's index. The stored index, as the clone wrote it, records the stored files' stat
data; a workspace shows them with the user as owner and overlayfs's device number, which
made git re-read the whole tree on a workspace's first `git status` (2.5 s at 20,000 files,
20 s at 100,000), until a per-user index was kept for each commit (2 s / 9-25 s for the
first job of each user at each commit). Now the stored configuration sets
`core.checkStat=minimal` (`servergit`), under which git compares only the whole-second
mtime, the size and the x bit, all of which the lower layer keeps: the stored index holds
for every user as it is, and the first workspace of a user at a new commit is made like
any other (see the package docstring for the figures).

The engine keeps the lower tree while a workspace uses it. The upper and work directories
live in the job's private state. The idmapped view of the tree is handed to overlayfs as a
descriptor, never attached anywhere (where the kernel does not take that, it is attached
in the job's state for the time of the mount: overlayfs holds clones of its layers).
`redirect_dir=on` lets a directory of the lower layer be renamed (else rename(2) fails with
EXDEV, which few programs handle). Mounted nosuid and nodev.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Final

from claude_batch_server.workspaces import idmap, linux
from claude_batch_server.workspaces.base import Workspace, WorkspaceError

_PROBE_ID: Final = 2_000_000_000  # an id no account has, to see the mapping at work
# overlayfs splits its options at ',' and lower layers at ':'; '\\' escapes
_OPTION_SEPARATORS: Final = frozenset(",:\\")


class OverlayStrategy:
    name = "overlay"
    keeps_source = True
    # Whether the kernel takes a detached mount as a layer (as /proc/self/fd/N), so that
    # the idmapped tree need not be attached and detached around every mount; None until
    # the first mount has told.
    detached_layers: bool | None = None

    def works(self, scratch: Path) -> bool:
        lower, state = scratch / "lower", scratch / "state"
        lower.mkdir()
        state.mkdir()
        (lower / "file").write_bytes(b"probe")
        workspace = Workspace(
            lower, scratch / "base", scratch / "workspace", state, _PROBE_ID, _PROBE_ID
        )
        try:
            self.create(workspace)
            (workspace.target / "file").chmod(0o600)  # a copy-up into the upper layer
        except (OSError, WorkspaceError):
            return False
        return (state / "upper" / "file").stat().st_uid == _PROBE_ID

    def create(self, workspace: Workspace) -> None:
        for layer in ("upper", "work"):
            (workspace.state / layer).mkdir(mode=0o700)
        # the top of the overlay takes owner and mode from the top of the upper layer
        os.chown(workspace.state / "upper", workspace.uid, workspace.gid)
        # root's while nothing is mounted on it: no one writes into it unseen
        workspace.target.mkdir(mode=0o700)
        self._mount(workspace)

    def writable(self, workspace: Workspace) -> list[Path]:
        # copy-ups pass through work
        return [workspace.state / "upper", workspace.state / "work"]

    def restore(self, workspace: Workspace) -> None:
        if not linux.is_mount_point(workspace.target):
            self._mount(workspace)

    def _mount(self, workspace: Workspace) -> None:
        layers = [
            f"upperdir={_option_path(workspace.state / 'upper')}",
            f"workdir={_option_path(workspace.state / 'work')}",
            "redirect_dir=on",
        ]
        flags = linux.MS_NOSUID | linux.MS_NODEV
        with idmap.owned_tree(workspace.source, workspace.uid, workspace.gid) as tree:
            if OverlayStrategy.detached_layers is not False:
                try:
                    options = ",".join([f"lowerdir=/proc/self/fd/{tree}", *layers])
                    linux.mount("overlay", workspace.target, "overlay", flags, options)
                except OSError as error:
                    # EINVAL: a kernel that takes no detached mount as a layer
                    if OverlayStrategy.detached_layers or error.errno != errno.EINVAL:
                        raise
                    OverlayStrategy.detached_layers = False
                else:
                    OverlayStrategy.detached_layers = True
                    return
            # an older kernel: the layer must be attached somewhere, for the mount's time
            lower = workspace.state / "lower"
            lower.mkdir(mode=0o700, exist_ok=True)
            idmap.attach(tree, lower)
            try:
                options = ",".join([f"lowerdir={_option_path(lower)}", *layers])
                linux.mount("overlay", workspace.target, "overlay", flags, options)
            finally:
                linux.unmount(lower)


def _option_path(path: Path) -> str:
    if _OPTION_SEPARATORS.intersection(str(path)):
        raise WorkspaceError(f"overlay cannot use a path with ',', ':' or '\\': {path}")
    return str(path)

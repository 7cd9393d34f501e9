"""What every copy-on-write strategy offers the engine: mechanism only. Where things live,
when bases are made or dropped, locking and records are the engine's business."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from claude_batch_server.errors import ServiceError


class WorkspaceError(ServiceError):
    """A workspace or stored repository could not be made, found, restored or removed."""


@dataclass(frozen=True)
class Workspace:
    """One workspace as a strategy sees it; every path is on the filesystem of DATA_DIR."""

    source: Path  # the stored tree at the workspace's commit, root's and read-only
    base: Path  # where a per-user base of `source` may be kept: one per (repo, commit, uid)
    target: Path  # the workspace; absent before `create`
    state: Path  # an existing root-only directory for this job's private state
    uid: int
    gid: int


class Strategy(Protocol):
    name: str
    # The workspace reads `source` for its whole life (overlay's lower layer): the engine
    # then keeps that tree while a workspace uses it, even after a pull or a removal.
    keeps_source: bool

    def works(self, scratch: Path) -> bool:
        """Whether this strategy really works in the empty directory `scratch`."""
        ...

    def create(self, workspace: Workspace) -> None:
        """Make `workspace.target`: a private, writable copy of `source`, every entry owned by the
        job's user, the top with mode 0700. May make `workspace.base` first if it is missing."""
        ...

    def writable(self, workspace: Workspace) -> list[Path]:
        """The directories whose trees hold all that the job writes in its workspace: what
        its disk quota counts."""
        ...

    def restore(self, workspace: Workspace) -> None:
        """Make an existing workspace usable again after a restart (e.g. remount it). The
        engine's removal needs no help: it detaches mounts and deletes subvolumes itself."""
        ...

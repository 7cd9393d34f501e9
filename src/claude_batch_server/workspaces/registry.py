"""The copy-on-write strategies by name, in the order `auto` tries them, and the choice.

`auto` takes the first strategy that works on DATA_DIR (`probe` tells which do), in the
order measured in docs/benchmarks.md ("Workspaces"; times at 20,000 files / 500 MB and at
100,000 / 2.5 GB):

1. overlay: 6-20 ms per job on ext4, XFS and btrfs alike, at either size, the first job
   of a user at a new commit included (nothing is kept per user), and next to no disk.
   Needs root and Linux 5.19+; a restart must remount.
2. btrfs: 5-11 ms per job, plain directories that need no remount, native semantics. But
   the first job of each user at each commit chowns a snapshot of the whole tree, which
   unshares all its metadata: seconds (4.5 s / 25 s before its git index was no longer
   refreshed) and 3-6% of the repository in disk, per user and commit. So it comes after
   overlay even on btrfs.
3. reflink: one clone per file, 2 s / 9-10 s per job, 1.1-3% of the repository in disk
   per job (an inode per file).
4. copy: the whole repository again, in time and disk, per job.
"""

from __future__ import annotations

from typing import Final

from claude_batch_server.settings import CowStrategy
from claude_batch_server.workspaces.base import Strategy, WorkspaceError
from claude_batch_server.workspaces.btrfs import BtrfsStrategy
from claude_batch_server.workspaces.copy import CopyStrategy
from claude_batch_server.workspaces.overlay import OverlayStrategy
from claude_batch_server.workspaces.reflink import ReflinkStrategy

STRATEGIES: Final[dict[str, Strategy]] = {
    strategy.name: strategy
    for strategy in (OverlayStrategy(), BtrfsStrategy(), ReflinkStrategy(), CopyStrategy())
}
ORDER: Final = tuple(STRATEGIES)
HOST_ONLY: Final = OverlayStrategy.name  # a mount, seen by this host's processes alone


def choose(
    requested: CowStrategy, works: dict[str, bool], where: str, shared: bool = False
) -> Strategy:
    """The strategy asked for, or with `auto` the first in ORDER that works; with `shared`
    (jobs run on other hosts, as Slurm's nodes) only one that makes a plain directory, which
    every host that mounts DATA_DIR sees: an overlay mount exists on this host alone."""
    if requested is CowStrategy.AUTO:
        usable = (name for name in ORDER if works[name] and not (shared and name == HOST_ONLY))
        return STRATEGIES[next(usable)]
    if not works[requested.value]:
        raise WorkspaceError(f"COW_STRATEGY={requested.value} does not work on {where}")
    return STRATEGIES[requested.value]

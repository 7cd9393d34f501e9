"""Which strategies really work on the filesystem of DATA_DIR, and what `auto` picks.

Each strategy is tried for real in a scratch directory under DATA_DIR (not /tmp, which may
be another filesystem): a subvolume and a snapshot, a reflink, an idmapped overlay with a
copy-up. `auto` takes the first that works in ORDER, the order measured in
docs/benchmarks.md ("Workspaces"):

1. btrfs: constant time, zero copies, and a plain directory tree that needs no mount.
2. overlay: constant time too, but a mount to restore after a restart, and the quirks of
   overlayfs (inode numbers change when a file is first written; a file written once is
   copied up whole).
3. reflink: no quirks and near-zero disk, but one clone per file: time grows with the
   file count (about a second per 20,000 files).
4. copy: the whole repository again, in time and disk, per job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from claude_batch_server.settings import CowStrategy
from claude_batch_server.workspaces import trees
from claude_batch_server.workspaces.base import Strategy, WorkspaceError
from claude_batch_server.workspaces.btrfs import BtrfsStrategy
from claude_batch_server.workspaces.copy import CopyStrategy
from claude_batch_server.workspaces.overlay import OverlayStrategy
from claude_batch_server.workspaces.reflink import ReflinkStrategy

STRATEGIES: Final[dict[str, Strategy]] = {
    strategy.name: strategy
    for strategy in (BtrfsStrategy(), OverlayStrategy(), ReflinkStrategy(), CopyStrategy())
}
ORDER: Final = tuple(STRATEGIES)


def available(scratch: Path) -> dict[str, bool]:
    """Whether each strategy works, tried in subdirectories of the empty dir `scratch`."""
    return {name: _works(strategy, scratch / name) for name, strategy in STRATEGIES.items()}


def _works(strategy: Strategy, scratch: Path) -> bool:
    scratch.mkdir(mode=0o700)
    try:
        return strategy.works(scratch)
    except OSError:
        return False
    finally:
        trees.remove_tree(scratch)


def choose(requested: CowStrategy, works: dict[str, bool], where: str) -> Strategy:
    """The strategy asked for, or with `auto` the first in ORDER that works."""
    if requested is CowStrategy.AUTO:
        return STRATEGIES[next(name for name in ORDER if works[name])]
    if not works[requested.value]:
        raise WorkspaceError(f"COW_STRATEGY={requested.value} does not work on {where}")
    return STRATEGIES[requested.value]

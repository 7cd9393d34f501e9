"""Which strategies really work on the filesystem of DATA_DIR.

Each strategy is tried for real in a scratch directory under DATA_DIR (not /tmp, which may
be another filesystem): an idmapped overlay with a copy-up, a subvolume and a snapshot, a
reflink.
"""

from __future__ import annotations

from pathlib import Path

from claude_batch_server.workspaces import trees
from claude_batch_server.workspaces.base import Strategy
from claude_batch_server.workspaces.registry import STRATEGIES


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

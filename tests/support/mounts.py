"""Overlay workspaces stay mounted when a server stops (it remounts them at start): what a
test or benchmark made under a folder is unmounted before the folder goes."""

from __future__ import annotations

import subprocess
from pathlib import Path


def unmount_beneath(root: Path) -> None:
    with Path("/proc/self/mounts").open() as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", point], check=False)

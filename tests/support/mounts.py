"""Mount tables. A server keeps its overlay workspaces in a mount namespace of its own, so
they never reach the test process's table; workspace tests and benchmarks that mount in
their own process unmount what they made under a folder before the folder goes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def mount_points(pid: int | str = "self") -> list[str]:
    """Every mount point in the mount namespace of process `pid` (octal escapes undone)."""
    with Path(f"/proc/{pid}/mountinfo").open() as table:
        fields = [line.split(" ", 5)[4] for line in table]
    return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), point) for point in fields]


def mounts_beneath(root: Path, pid: int | str = "self") -> list[str]:
    return [point for point in mount_points(pid) if point.startswith(f"{root}/")]


def unmount_beneath(root: Path) -> None:
    for point in sorted(mounts_beneath(root), reverse=True):
        subprocess.run(["umount", point], check=False)

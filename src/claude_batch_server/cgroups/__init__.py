"""Control groups for jobs: cgroup v2 (the usual host, a subtree delegated by systemd) and
cgroup v1 (a hierarchy per controller, with or without the v2 hierarchy beside it), behind
the `ControlGroups` protocol of `base`. `detect` finds which one this host offers, from
the mounts and the server's own groups, at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from claude_batch_server.cgroups import v1, v2
from claude_batch_server.cgroups.base import ControlGroups, read

PROC = Path("/proc/self")


@dataclass(frozen=True)
class Mount:
    point: Path
    root: str  # the hierarchy's directory mounted there
    v2: bool
    controllers: frozenset[str]


def detect(root: str, proc: Path = PROC) -> ControlGroups | None:
    """The control groups of this host, with the server's root of job groups `root` made
    beneath its own group; None where there are none it may use (not root, none mounted)."""
    mounts = _mounts(read(proc / "mountinfo"))
    own = _own_groups(read(proc / "cgroup"))
    unified = next((_dir(m, own.get("")) for m in mounts if m.v2), None)
    if unified is not None and {"memory", "pids"} <= set(
        read(unified / "cgroup.controllers").split()
    ):
        return v2.V2Groups.prepare(unified, root)
    hierarchies: dict[str, Path] = {}
    for mount in mounts:
        for controller in mount.controllers & set(v1.CONTROLLERS):
            path = _dir(mount, own.get(controller))
            if path is not None:
                hierarchies[controller] = path
    if "memory" not in hierarchies:
        return None
    return v1.V1Groups.prepare(hierarchies, root, unified)


def _mounts(mountinfo: str) -> list[Mount]:
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        dash = fields.index("-")
        fstype, options = fields[dash + 1], fields[dash + 3].split(",")
        if fstype in ("cgroup", "cgroup2"):
            point = Path(fields[4].replace("\\040", " "))
            found.append(Mount(point, fields[3], fstype == "cgroup2", frozenset(options)))
    return found


def _own_groups(cgroup: str) -> dict[str, str]:
    """Controller name ("" for v2) → the group of this process in its hierarchy."""
    own = {}
    for line in cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _dir(mount: Mount, own: str | None) -> Path | None:
    """The directory of the group `own` under `mount`; None when the mount does not show it
    (a namespace or a bind mount of another part of the hierarchy)."""
    if own is None:
        return None
    inner = Path(own).relative_to(mount.root) if Path(own).is_relative_to(mount.root) else None
    return mount.point / inner if inner is not None else None

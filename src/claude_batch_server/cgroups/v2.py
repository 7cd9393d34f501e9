"""cgroup v2: one hierarchy. On a systemd host the server's unit delegates its subtree
(`Delegate=yes`); the server moves itself into a leaf of its own (a group with children
may hold no processes) and hands the memory, cpu and pids controllers down to the jobs.

Also used without controllers, for the v2 hierarchy that v1 hosts mount beside theirs: it
still tracks every process and kills a whole group with one write to `cgroup.kill`.
"""

from __future__ import annotations

import errno
from pathlib import Path

from claude_batch_server.cgroups.base import (
    Flavour,
    Limits,
    Usage,
    cpu_quota,
    job_names,
    kill_members,
    make_dir,
    members,
    read,
    read_int,
    read_keyed,
    remove_dir,
    wait_empty,
    write,
)

CONTROLLERS = frozenset({"memory", "cpu", "pids"})
CPU_PERIOD = 100_000  # microseconds
SERVER_LEAF = "server"  # where the server's own processes go when its group gets children


class V2Groups:
    flavour = Flavour.V2

    def __init__(self, parent: Path, controllers: frozenset[str]) -> None:
        self.parent = parent
        self.controllers = controllers

    @classmethod
    def prepare(cls, own: Path, root: str) -> V2Groups:
        """The server's root of job groups beneath its own group `own`, with every
        controller that `own` offers handed down to it."""
        available = frozenset(read(own / "cgroup.controllers").split()) & CONTROLLERS
        if available:
            _delegate(own, available)
        parent = own / root
        make_dir(parent)
        if available:
            write(parent / "cgroup.subtree_control", _enable(available))
        return cls(parent, available)

    def create(self, name: str, limits: Limits) -> list[str]:
        group = self.parent / name
        make_dir(group)
        if "memory" in self.controllers and limits.memory_max:
            write(group / "memory.max", str(limits.memory_max))
            if (group / "memory.swap.max").exists():  # the limit means memory, not swap
                write(group / "memory.swap.max", "0")
            write(group / "memory.oom.group", "1")  # an OOM kill ends the whole job
        if "cpu" in self.controllers and limits.cpus:
            write(group / "cpu.max", f"{cpu_quota(limits.cpus, CPU_PERIOD)} {CPU_PERIOD}")
        if "pids" in self.controllers and limits.pids_max:
            write(group / "pids.max", str(limits.pids_max))
        return [str(group / "cgroup.procs")]

    def usage(self, name: str) -> Usage:
        group = self.parent / name
        peak = read_int(group / "memory.peak") or read_int(group / "memory.current")
        return Usage(
            cpu_seconds=read_keyed(group / "cpu.stat", "usage_usec") / 1e6,
            memory_peak_bytes=peak,
            oom_kills=read_keyed(group / "memory.events", "oom_kill"),
        )

    def kill(self, name: str) -> None:
        group = self.parent / name
        if not group.is_dir():
            return
        try:
            write(group / "cgroup.kill", "1")
        except OSError:  # a kernel before 5.14
            kill_members(group / "cgroup.procs")
        wait_empty(group / "cgroup.procs")

    def remove(self, name: str) -> None:
        remove_dir(self.parent / name)

    def names(self) -> list[str]:
        return job_names(self.parent)

    def close(self) -> None:
        remove_dir(self.parent)


def _enable(controllers: frozenset[str]) -> str:
    return " ".join(f"+{name}" for name in sorted(controllers))


def _delegate(own: Path, controllers: frozenset[str]) -> None:
    """Enables `controllers` for the children of `own`; a group holding processes cannot
    have them (unless it is the root), so the server's processes move to a leaf first."""
    try:
        write(own / "cgroup.subtree_control", _enable(controllers))
        return
    except OSError as error:
        if error.errno != errno.EBUSY:
            raise
    leaf = own / SERVER_LEAF
    make_dir(leaf)
    for pid in members(own / "cgroup.procs"):
        write(leaf / "cgroup.procs", str(pid))
    write(own / "cgroup.subtree_control", _enable(controllers))

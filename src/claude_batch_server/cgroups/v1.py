"""cgroup v1: a hierarchy per controller (memory, cpu, cpuacct, pids, freezer), each
mounted on its own or together. A job's group is a directory in each, made beneath the
server's own group in that hierarchy.

Where the host also mounts the v2 hierarchy (without controllers), a job's group is made
there too: it tracks the same processes and kills them all at once (`cgroup.kill`).
Without it, a kill freezes the group, kills what cgroup.procs lists, and thaws it, in
bounded rounds.
"""

from __future__ import annotations

from pathlib import Path

from claude_batch_server.cgroups.base import (
    Flavour,
    Limits,
    Usage,
    cpu_quota,
    job_names,
    kill_members,
    make_dir,
    read_int,
    read_keyed,
    remove_dir,
    signal_members,
    wait_empty,
    write,
)
from claude_batch_server.cgroups.v2 import V2Groups

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
CPU_PERIOD = 100_000  # microseconds


class V1Groups:
    flavour = Flavour.V1

    def __init__(self, parents: dict[str, Path], tracker: V2Groups | None) -> None:
        """`parents`: for each controller mounted, the server's root of job groups in its
        hierarchy (comounted controllers share one)."""
        self.parents = parents
        self.tracker = tracker

    @classmethod
    def prepare(cls, own: dict[str, Path], root: str, unified: Path | None) -> V1Groups:
        """`own`: the server's own group in each controller's hierarchy; `unified`: its
        group in the v2 hierarchy, if mounted."""
        parents = {controller: path / root for controller, path in own.items()}
        for parent in set(parents.values()):
            make_dir(parent)
        tracker = V2Groups.prepare(unified, root) if unified is not None else None
        return cls(parents, tracker)

    def _dir(self, controller: str, name: str) -> Path | None:
        parent = self.parents.get(controller)
        return parent / name if parent is not None else None

    def _dirs(self, name: str) -> list[Path]:
        return sorted({parent / name for parent in self.parents.values()})

    def create(self, name: str, limits: Limits) -> list[str]:
        for group in self._dirs(name):
            make_dir(group)
        memory = self._dir("memory", name)
        if memory is not None and limits.memory_max:
            write(memory / "memory.limit_in_bytes", str(limits.memory_max))
            if (memory / "memory.memsw.limit_in_bytes").exists():  # memory, not swap
                write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_max))
        cpu = self._dir("cpu", name)
        if cpu is not None and limits.cpus:
            write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD))
            write(cpu / "cpu.cfs_quota_us", str(cpu_quota(limits.cpus, CPU_PERIOD)))
        pids = self._dir("pids", name)
        if pids is not None and limits.pids_max:
            write(pids / "pids.max", str(limits.pids_max))
        procs = [str(group / "cgroup.procs") for group in self._dirs(name)]
        if self.tracker is not None:
            procs += self.tracker.create(name, Limits())
        return procs

    def usage(self, name: str) -> Usage:
        memory = self._dir("memory", name)
        cpuacct = self._dir("cpuacct", name)
        if cpuacct is not None:
            cpu = read_int(cpuacct / "cpuacct.usage") / 1e9
        elif self.tracker is not None:
            cpu = self.tracker.usage(name).cpu_seconds
        else:
            cpu = 0.0
        if memory is None:
            return Usage(cpu_seconds=cpu)
        return Usage(
            cpu_seconds=cpu,
            memory_peak_bytes=read_int(memory / "memory.max_usage_in_bytes"),
            oom_kills=read_keyed(memory / "memory.oom_control", "oom_kill"),
        )

    def kill(self, name: str) -> None:
        if self.tracker is not None and (self.tracker.parent / name).is_dir():
            self.tracker.kill(name)
        else:
            self._freeze_and_kill(name)
        for group in self._dirs(name):
            wait_empty(group / "cgroup.procs")

    def _freeze_and_kill(self, name: str) -> None:
        groups = [group for group in self._dirs(name) if group.is_dir()]
        if not groups:
            return
        procs = groups[0] / "cgroup.procs"
        freezer = self._dir("freezer", name)
        if freezer is not None and freezer.is_dir():
            write(freezer / "freezer.state", "FROZEN")  # no fork between reading and killing
            try:
                signal_members(procs)
            finally:
                write(freezer / "freezer.state", "THAWED")  # killed, they die once thawed
        kill_members(procs)

    def remove(self, name: str) -> None:
        for group in self._dirs(name):
            remove_dir(group)
        if self.tracker is not None:
            self.tracker.remove(name)

    def names(self) -> list[str]:
        found = {name for parent in set(self.parents.values()) for name in job_names(parent)}
        if self.tracker is not None:
            found.update(self.tracker.names())
        return sorted(found)

    def close(self) -> None:
        for parent in set(self.parents.values()):
            remove_dir(parent)
        if self.tracker is not None:
            self.tracker.close()

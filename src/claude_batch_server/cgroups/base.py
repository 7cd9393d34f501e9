"""What every flavour of control groups offers the local executor, and the file work they
share.

A job's group is a directory per hierarchy, named for the job beneath the server's own
group (`ROOT_PREFIX` + a digest of DATA_DIR, so that a restarted server finds what a dead
one left, and two servers with different DATA_DIRs never touch each other's). The
directories stay root's: a job, running as its user, can neither leave its group nor
change its limits. A process joins the groups whose `cgroup.procs` files `create` returns
(the spawner's child, before it takes the user's ids: see `jobs/spawner.py` for how), so
every process of the job is inside from its fork on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

ROOT_PREFIX = "claude-batch-"
JOB_PREFIX = "job-"
DIFF_PREFIX = "diff-"  # the server's own work on a job's files (a diff of its workspace)
EMPTY_WAIT = 5.0  # seconds a killed group gets to empty before it is left to the sweep
KILL_ROUNDS = 200  # a group whose members keep forking is frozen; this bounds the rounds


class Flavour(StrEnum):
    V1 = "v1"
    V2 = "v2"
    NONE = "none"  # no control group could be made: jobs run without (logged at start)


@dataclass(frozen=True)
class Limits:
    """0 means no limit."""

    memory_max: int = 0  # bytes
    cpus: float = 0.0  # cores
    pids_max: int = 0


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float = 0.0
    memory_peak_bytes: int = 0
    oom_kills: int = 0


NO_USAGE = Usage()


class ControlGroups(Protocol):
    """One flavour of control groups, rooted beneath the server's own group."""

    flavour: Flavour

    def create(self, name: str, limits: Limits) -> list[str]:
        """Makes the group `name` with `limits`; returns the cgroup.procs files to join."""
        ...

    def usage(self, name: str) -> Usage: ...

    def kill(self, name: str) -> None:
        """SIGKILLs every process in the group, whatever it did to its own processes, and
        waits (bounded) until the group is empty."""
        ...

    def remove(self, name: str) -> None:
        """Removes the (empty) group; one that is still busy is left to the next sweep."""
        ...

    def names(self) -> list[str]:
        """The groups that exist beneath the server's own, also those of a dead server."""
        ...

    def close(self) -> None:
        """Removes the server's root group, unless a job's group is still in it."""
        ...


MIN_CPU_QUOTA = 1000  # microseconds per period: the least either kernel interface takes


def cpu_quota(cpus: float, period: int) -> int:
    return max(MIN_CPU_QUOTA, round(cpus * period))


def root_name(data_dir: Path) -> str:
    return ROOT_PREFIX + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


def write(path: Path, value: str) -> None:
    with open(path, "w") as file:
        file.write(value)


def read(path: Path) -> str:
    with open(path) as file:
        return file.read()


def read_keyed(path: Path, key: str) -> int:
    """The value of `key` in a flat keyed file (`oom_kill 3`), 0 if absent or unreadable."""
    with contextlib.suppress(OSError):
        for line in read(path).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
    return 0


def read_int(path: Path) -> int:
    try:
        return int(read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def make_dir(path: Path) -> None:
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o755)


def members(procs: Path) -> list[int]:
    try:
        return [int(line) for line in read(procs).split()]
    except OSError:
        return []


def kill_members(procs: Path) -> None:
    """Kills what cgroup.procs lists until it lists nothing, for a bounded number of rounds
    (a fork between reading and killing adds a member; the next round gets it)."""
    for _ in range(KILL_ROUNDS):
        if not signal_members(procs):
            return
        time.sleep(0.001)


def signal_members(procs: Path) -> bool:
    """SIGKILLs every process cgroup.procs lists; False when it lists none."""
    pids = members(procs)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return bool(pids)


def wait_empty(procs: Path, timeout: float = EMPTY_WAIT) -> bool:
    """Killed processes leave their group once they are reaped; their parent may be slow."""
    deadline = time.monotonic() + timeout
    while members(procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def remove_dir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        return
    except OSError as error:
        if error.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            raise


def job_names(parent: Path) -> list[str]:
    try:
        return sorted(
            entry.name
            for entry in parent.iterdir()
            if entry.is_dir() and entry.name.startswith((JOB_PREFIX, DIFF_PREFIX))
        )
    except FileNotFoundError:
        return []

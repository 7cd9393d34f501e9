"""Free space on DATA_DIR, watched while jobs run: a job that writes until the disk is full
must not take the server, its database or other users' jobs with it.

Every GUARD_TICK seconds: below DATA_DIR_MIN_FREE, the running job whose workspace (with
its TMPDIR) grew most since it was made is stopped, one at a time, and new starts wait
until the space is back. Growth is the disk blocks its trees hold less those of the
stored tree it was cloned from, walked only while space is low. A job that grew less
than MIN_GROWTH is left alone: the space went elsewhere.

The database keeps room for its writes: a reserve file (RESERVE, at most half the
minimum) is kept in DATA_DIR, and given back to the filesystem when it is nearly full,
so that the database (SQLite lives there), the end of the stopped run and logins still
write; it is made again once there is room. The gap of one tick before the reserve is
given back is bridged by the transcript's writer, which retries.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from claude_batch_server.jobs.sandbox import Sandbox
from claude_batch_server.logs import log
from claude_batch_server.workspaces.engine import WorkspaceEngine

GUARD_TICK = 1.0  # seconds between looks at the free space
RESERVE = 64 * 1024 * 1024  # bytes kept back for the database, at most
RESERVE_FILE = "reserve"
MIN_GROWTH = 1024 * 1024  # bytes a job must have grown by to be stopped for the space
WALK_LIMIT = 1_000_000  # entries walked per tree, at most
WALK_PAUSE = 10.0  # seconds, while space stays low, after a walk that found none to stop


@dataclass(frozen=True)
class Space:
    free: int  # bytes an unprivileged user may still write
    total: int


class DiskGuard:
    def __init__(
        self,
        data_dir: Path,
        min_free: Callable[[int], int],
        workspaces: WorkspaceEngine,
        sandbox: Sandbox,
    ) -> None:
        self._data_dir = data_dir
        self._min_free = min_free
        self._workspaces = workspaces
        self._sandbox = sandbox
        self._stopped: set[str] = set()  # jobs stopped for the space, until they end
        self._next_walk = 0.0  # monotonic time
        self.low = False  # whether new starts wait

    def check(self, running: list[str]) -> str | None:
        """Blocking: looks at the space, keeps the reserve, and names the running job to
        stop for the space, if any (each job once)."""
        self._stopped &= set(running)
        space = self.space()
        minimum = self._min_free(space.total)
        self._keep_reserve(space, minimum)
        was_low, self.low = self.low, space.free < minimum
        if self.low != was_low:
            log.warning("free space on DATA_DIR", low=self.low, free=space.free, minimum=minimum)
        if not self.low or time.monotonic() < self._next_walk:
            return None
        growth = {job_id: self.growth(job_id) for job_id in running if job_id not in self._stopped}
        victim = max(growth, key=growth.__getitem__, default=None)
        if victim is None or growth[victim] < MIN_GROWTH:
            self._next_walk = time.monotonic() + WALK_PAUSE
            return None
        log.warning("stopping the job that grew most", job=victim, grew=growth[victim])
        self._stopped.add(victim)
        return victim

    def space(self) -> Space:
        found = os.statvfs(self._data_dir)
        return Space(free=found.f_bavail * found.f_frsize, total=found.f_blocks * found.f_frsize)

    def growth(self, job_id: str) -> int:
        trees = [self._workspaces.workspace_path(job_id), self._sandbox.tmp_path(job_id)]
        source = self._workspaces.source_of(job_id)
        return sum(map(disk_usage, trees)) - (disk_usage(source) if source else 0)

    def _keep_reserve(self, space: Space, minimum: int) -> None:
        size = min(RESERVE, minimum // 2)
        path = self._data_dir / RESERVE_FILE
        if space.free < size:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                log.warning("DATA_DIR nearly full: its reserve is given to the database")
        elif space.free >= minimum + size and size and not path.exists():
            _make_reserve(path, size)


def _make_reserve(path: Path, size: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError:  # no room after all: try again later
        path.unlink()
    finally:
        os.close(fd)


def disk_usage(top: Path) -> int:
    """Bytes of disk the tree holds, walked by descriptors (no link is followed, whatever
    the job does meanwhile), at most WALK_LIMIT entries."""
    total, seen = 0, 0
    with contextlib.suppress(OSError):
        total = os.lstat(top).st_blocks * 512
    for _, dirs, files, fd in os.fwalk(top, follow_symlinks=False):
        for name in dirs + files:
            seen += 1
            with contextlib.suppress(OSError):
                total += os.stat(name, dir_fd=fd, follow_symlinks=False).st_blocks * 512
        if seen >= WALK_LIMIT:
            break
    return total

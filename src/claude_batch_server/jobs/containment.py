"""Containment of the local executor: each run of a job in a control group of its own,
with the limits of the settings, measured while it runs and killed whole when it ends.

The group is made before the job's first process forks (its cgroup.procs files go with
the spawner's request, and the spawner's child joins them while it is still root), so
nothing the job starts is ever outside it. Whatever ended the run, `end` kills the whole
group, then reads what it used. A dead server's groups are killed at the next start
(`sweep`), by their names (`job-<id>`) beneath the server's root group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import anyio

from claude_batch_server.cgroups import detect
from claude_batch_server.cgroups.base import (
    JOB_PREFIX,
    NO_USAGE,
    ControlGroups,
    Flavour,
    Limits,
    Usage,
)
from claude_batch_server.logs import log

WATCH_EVERY = 1.0  # seconds between readings of a running job's usage


class Containment:
    def __init__(self, groups: ControlGroups | None, limits: Limits) -> None:
        self._groups = groups
        self.limits = limits

    @classmethod
    def for_host(cls, root: str, limits: Limits) -> Containment:
        """Blocking, at start: the control groups this host offers, or none (logged)."""
        try:
            groups = detect(root)
        except OSError as error:
            log.warning("jobs run without control groups", error=str(error))
            groups = None
        else:
            if groups is None:
                log.warning("jobs run without control groups: none found")
        return cls(groups, limits)

    @property
    def flavour(self) -> Flavour:
        return self._groups.flavour if self._groups is not None else Flavour.NONE

    def create(self, job_id: str) -> list[str]:
        """Blocking: the job's group, made anew; the cgroup.procs files its process joins."""
        return self.create_named(JOB_PREFIX + job_id, self.limits)

    def create_named(self, name: str, limits: Limits) -> list[str]:
        """Blocking: the group `name`, made anew; the cgroup.procs files to join."""
        if self._groups is None:
            return []
        self._groups.kill(name)  # what a run before it may have left
        self._groups.remove(name)
        return self._groups.create(name, limits)

    def end_named(self, name: str) -> None:
        """Blocking: kills whatever is in the group `name`, and removes it."""
        if self._groups is not None:
            self._groups.kill(name)
            self._groups.remove(name)

    def usage(self, job_id: str) -> Usage:
        if self._groups is None:
            return NO_USAGE
        return self._groups.usage(JOB_PREFIX + job_id)

    def end(self, job_id: str) -> Usage:
        """Blocking: kills whatever is left of the job's group, and returns what it used."""
        if self._groups is None:
            return NO_USAGE
        name = JOB_PREFIX + job_id
        self._groups.kill(name)
        used = self._groups.usage(name)
        self._groups.remove(name)
        return used

    def sweep(self, keep: Callable[[], Iterable[str]]) -> int:
        """Blocking, at start: kills and removes every job's group but those of the jobs
        `keep()` names (the running ones, which other live servers run); returns how many
        there were. `keep` is asked after the groups are listed: a job claimed meanwhile
        by another server, whose group is new, is running by then."""
        if self._groups is None:
            return 0
        names = self._groups.names()
        kept = {JOB_PREFIX + job_id for job_id in keep()}
        swept = 0
        for name in names:
            if name not in kept:
                self._groups.kill(name)
                self._groups.remove(name)
                swept += 1
        return swept

    def close(self) -> None:
        """Blocking, at a clean stop: removes the server's root group if no job's is left."""
        if self._groups is not None:
            self._groups.close()

    async def watch(
        self, job_id: str, on_usage: Callable[[Usage], None], on_oom: Callable[[], None]
    ) -> None:
        """Reads the running job's usage now and again and passes it to `on_usage` (in a
        worker thread) until cancelled; calls `on_oom` once the kernel killed a process of
        the group for its memory."""
        while True:
            await asyncio.sleep(WATCH_EVERY)
            used = await anyio.to_thread.run_sync(self._report, job_id, on_usage)
            if used.oom_kills:
                on_oom()
                return

    def _report(self, job_id: str, on_usage: Callable[[Usage], None]) -> Usage:
        used = self.usage(job_id)
        try:
            on_usage(used)
        except Exception:  # a reading is worth no failed run
            log.exception("recording a job's usage failed", job=job_id)
        return used

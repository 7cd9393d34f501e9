"""A job's first process on this host, started by the spawner, in the manner of
JupyterHub's spawners: start, poll, stop, and what a dead server left of one.

The spawner (`spawner.py`, reached through `spawner_client`) forks, takes the user's uid,
primary gid and supplementary groups, a new session and so a process group of its own,
and runs the reaper (`reaper.py`), which starts the command with a clean environment and
kills everything the run started once it ends, also what left the process group.
Stopping sends SIGTERM (the reaper passes a graceful SIGINT to Claude Code) and, should
anything outlive the grace period, SIGKILL to the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio

from claude_batch_server.jobs import wire
from claude_batch_server.jobs.lines import Line, pipe_reader, read_lines
from claude_batch_server.jobs.queue import owner_is_here
from claude_batch_server.jobs.spawner_client import ProcessSpec, SpawnerClient
from claude_batch_server.store.tables import Job

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL


class AgentProcess:
    def __init__(self, spec: ProcessSpec, spawner: SpawnerClient) -> None:
        self.spec = spec
        self._spawner = spawner
        self._pid: int | None = None
        self._exited: asyncio.Future[int] | None = None
        self._stdout: asyncio.StreamReader | None = None
        self._stderr: asyncio.StreamReader | None = None
        self._feeding: asyncio.Task[None] | None = None
        self.pid_start: int | None = None

    @property
    def pid(self) -> int:
        assert self._pid is not None, "not started"
        return self._pid

    async def start(self) -> None:
        pipes = [os.pipe() for _ in range(wire.STREAMS)]
        (stdin, feed), (out, stdout), (err, stderr) = pipes
        try:
            self._pid, self._exited = await self._spawner.spawn(self.spec, [stdin, stdout, stderr])
        except BaseException:
            for fd in (feed, out, err):
                os.close(fd)
            raise
        finally:
            for fd in (stdin, stdout, stderr):
                os.close(fd)
        self.pid_start = process_start_time(self._pid)
        self._stdout = await pipe_reader(out)
        self._stderr = await pipe_reader(err)
        # not awaited: an agent that never reads its stdin must not stall the job
        self._feeding = asyncio.create_task(_feed(feed, self.spec.stdin))

    def stdout(self) -> AsyncIterator[Line]:
        assert self._stdout is not None
        return read_lines(self._stdout)

    def stderr(self) -> AsyncIterator[Line]:
        assert self._stderr is not None
        return read_lines(self._stderr)

    def poll(self) -> int | None:
        assert self._exited is not None
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        assert self._exited is not None
        return await asyncio.shield(self._exited)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM to the reaper, SIGKILL to the group after `grace`; returns when all ended."""
        if self.poll() is None:  # not reaped yet, so the pid is still the reaper's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait(), grace)
        await self.clear_group()

    async def clear_group(self) -> None:
        """Kills whatever is still in the process group, and waits until it is empty.

        A reaper that exited by itself leaves nothing (it waits for its whole tree), and its
        pid may then belong to someone else: the group is signalled only while the reaper
        runs, or when it was killed and may have left members, which keep the id taken."""
        code = self.poll()
        if code is None or code < 0:
            _signal_group(self.pid, signal.SIGKILL)
        await self.wait()
        deadline = time.monotonic() + STOP_GRACE
        while group_alive(self.pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._feeding is not None:
            self._feeding.cancel()  # its reader is gone: what it still holds is dropped


async def start_agent(
    spawner: SpawnerClient, spec: Callable[[], ProcessSpec], release: Callable[[], object]
) -> AgentProcess:
    """The agent started through the spawner, its spec made in a worker thread (blocking:
    folders, groups); `release` undoes what the spec took should either step fail."""
    try:
        process = AgentProcess(await anyio.to_thread.run_sync(spec), spawner)
        await process.start()
    except BaseException:
        await anyio.to_thread.run_sync(release)
        raise
    return process


async def _feed(fd: int, data: bytes) -> None:
    """Writes the job's stdin and closes it."""
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        writer.write(data)
        await writer.drain()
    writer.close()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def kill_leftover(job: Job, wait: float = STOP_GRACE) -> bool:
    """After a crash: kills the process group a dead server left of `job`'s run. Returns
    True when there was one. Only a server of this host left a pid that names anything here
    (servers on shared storage). The leader is recognised by its start time; once the
    leader is gone its pid cannot be reused while the group still exists, so the group is
    ours."""
    pid, pid_start = job.pid, job.pid_start
    if pid is None or not owner_is_here(job.lease_owner):
        return False
    leader_start = process_start_time(pid)
    if leader_start is not None and leader_start != pid_start:
        return False  # the pid now belongs to someone else
    if not group_alive(pid):
        return False
    # the reaper, if it still runs, ends the whole tree, also what left the group
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)
    return True

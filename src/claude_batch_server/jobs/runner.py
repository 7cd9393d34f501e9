"""Claude Code as an OS process of the job's user, in the manner of JupyterHub's spawners:
start, poll, stop.

Processes are started by the spawner (`spawner.py`), a small root process the server
starts once: it forks, takes the user's uid, primary gid and supplementary groups, a new
session and so a process group of its own, and runs the reaper (`reaper.py`), which starts
Claude Code with a clean environment and kills everything the run started once it ends,
also what left the process group. Stopping sends SIGTERM (the reaper passes a graceful
SIGINT to Claude Code) and, should anything outlive the grace period, SIGKILL to the whole
group.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio

from claude_batch_server.accounts import Account
from claude_batch_server.jobs import landlock, spawner
from claude_batch_server.logs import log

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
REAPER_GRACE = 5.0  # seconds the reaper gives Claude Code after its SIGINT
SPAWNER_EXIT = REAPER_GRACE + 5.0  # seconds the spawner gets to stop what still runs
OPEN_FILES = 8192
READ_LIMIT = 1024 * 1024  # an asyncio line buffer; longer lines arrive in pieces
MAX_LINE = 8 * 1024 * 1024  # bytes of one output line kept; the rest is read and dropped
T = TypeVar("T")
LOST = -signal.SIGKILL  # the exit code of a job whose spawner died under it


@dataclass(frozen=True)
class RunSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    account: Account
    stdin: bytes
    # flag -> content: written by the job's own process into a folder only its user reads,
    # and passed as `flag=path`, never in the command line (see `command`)
    files: dict[str, str] = field(default_factory=dict)
    cgroup_procs: tuple[str, ...] = ()  # the job's control group, joined before it runs
    sandbox: landlock.Confinement | None = None


@dataclass(frozen=True)
class Line:
    data: bytes  # at most MAX_LINE bytes: the line with its newline, unless cut or last
    dropped: int = 0  # bytes cut off its end


class SpawnError(RuntimeError):
    """The spawner could not start a job's process."""


class Spawner:
    """The server's end of the spawner: started with the server, and again should it die."""

    def __init__(self) -> None:
        self._link: _SpawnerLink | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        async with self._starting:
            if self._link is None or not self._link.alive:
                self._link = await _SpawnerLink.open()

    async def spawn(self, spec: RunSpec, fds: list[int]) -> tuple[int, asyncio.Future[int]]:
        """Starts `spec` with stdin, stdout, stderr = `fds`; returns its pid and the future
        of its exit code."""
        await self.start()  # a no-op unless the spawner died
        assert self._link is not None
        return await self._link.spawn(spec, fds)

    async def close(self) -> None:
        """Ends the spawner: it stops whatever still runs and exits."""
        if self._link is not None:
            await self._link.close()


class _SpawnerLink:
    """One spawner process: requests go out with the job's pipes, reports of started and
    exited processes come back and resolve futures."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        requests: socket.socket,
        reader: asyncio.StreamReader,
        reports: asyncio.StreamWriter,
    ) -> None:
        self._process = process
        self._requests = requests
        self._reports = reports  # kept: collecting it would close the connection
        self._ids = itertools.count(1)
        self._starting: dict[int, asyncio.Future[tuple[int, asyncio.Future[int]]]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._sending = asyncio.Lock()  # one request at a time on the socket
        self._reader = asyncio.create_task(self._read_reports(reader), name="spawner")

    @classmethod
    async def open(cls) -> _SpawnerLink:
        requests, theirs_requests = socket.socketpair()
        reports, theirs_reports = socket.socketpair()
        passed = (theirs_requests.fileno(), theirs_reports.fileno())
        with theirs_requests, theirs_reports:
            process = subprocess.Popen(
                [sys.executable, "-I", "-m", spawner.__name__, *map(str, passed)],
                pass_fds=passed,
                stdin=subprocess.DEVNULL,
                env={"PATH": os.defpath},  # none of the server's settings or secrets
            )
        reader, writer = await asyncio.open_unix_connection(sock=reports, limit=READ_LIMIT)
        requests.setblocking(False)  # see _send
        return cls(process, requests, reader, writer)

    @property
    def alive(self) -> bool:
        return not self._reader.done()

    async def spawn(self, spec: RunSpec, fds: list[int]) -> tuple[int, asyncio.Future[int]]:
        request_id = next(self._ids)
        started: asyncio.Future[tuple[int, asyncio.Future[int]]]
        started = asyncio.get_running_loop().create_future()
        self._starting[request_id] = started
        request = spawner.encode(_request(request_id, spec))
        try:
            await self._send(request, fds)
            return await started
        finally:
            self._starting.pop(request_id, None)

    async def _send(self, request: bytes, fds: list[int]) -> None:
        """At once when the socket takes the request whole, as it does unless the spawner
        fell behind; else the rest from a worker thread, never blocking the event loop."""
        async with self._sending:
            sent = _send_some(self._requests, request, fds)
            if sent == len(request):
                return
            try:
                await anyio.to_thread.run_sync(_send_rest, self._requests, request, sent, fds)
            except OSError:
                # a request cut short would garble the next: end the link (the spawner stops
                # its jobs on EOF, and a new one is started)
                self._requests.shutdown(socket.SHUT_WR)
                raise

    async def _read_reports(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                self._take(json.loads(line))
        finally:
            self._lost()

    def _take(self, report: dict[str, Any]) -> None:
        if "started" in report:
            pid, exited = report["pid"], asyncio.get_running_loop().create_future()
            self._exits[pid] = exited
            started = self._starting.get(report["started"])
            if started is None or started.done():  # its job gave up waiting: nobody runs it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            _resolve(started, (pid, exited))
        elif "exited" in report:
            _resolve(self._exits.pop(report["exited"], None), report["status"])
        elif (started := self._starting.get(report["failed"])) and not started.done():
            started.set_exception(SpawnError(report["error"]))

    def _lost(self) -> None:
        """The spawner died: what it ran can no longer be waited for, so it is killed."""
        if self._starting or self._exits:
            log.error("the spawner died", running=len(self._exits))
        for started in self._starting.values():
            if not started.done():
                started.set_exception(SpawnError("the spawner died"))
        for pid, exited in self._exits.items():
            _signal_group(pid, signal.SIGKILL)
            _resolve(exited, LOST)
        self._exits.clear()

    async def close(self) -> None:
        self._requests.close()
        await anyio.to_thread.run_sync(_wait_or_kill, self._process, SPAWNER_EXIT)
        with contextlib.suppress(Exception):  # a failed reader has ended its jobs already
            await self._reader
        self._reports.close()


def _send_some(sock: socket.socket, data: bytes, fds: list[int]) -> int:
    """What a non-blocking socket takes of `data` now, with `fds` along the first byte."""
    try:
        return socket.send_fds(sock, [data], fds)
    except BlockingIOError:
        return 0


def _send_rest(sock: socket.socket, data: bytes, sent: int, fds: list[int]) -> None:
    """Blocking: the rest of `data`, once the peer reads (the descriptors went with the
    first byte sent)."""
    writable = select.poll()  # not select(): descriptors may be above FD_SETSIZE
    writable.register(sock, select.POLLOUT)
    while sent < len(data):
        writable.poll()
        sent += _send_some(sock, data[sent:], [] if sent else fds)


def _request(request_id: int, spec: RunSpec) -> spawner.Request:
    account = spec.account
    return spawner.Request(
        id=request_id,
        argv=spec.argv,
        files=spec.files,
        env=spec.env,
        cwd=str(spec.cwd),
        uid=account.uid,
        gid=account.gid,
        groups=list(account.supplementary_gids),
        grace=REAPER_GRACE,
        nofile=OPEN_FILES,
        cgroups=list(spec.cgroup_procs),
        sandbox=spec.sandbox,
    )


def _resolve(future: asyncio.Future[T] | None, value: T) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _wait_or_kill(process: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class AgentProcess:
    def __init__(self, spec: RunSpec, spawner: Spawner) -> None:
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
        pipes = [os.pipe() for _ in range(spawner.STREAMS)]
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
        self._stdout = await _reader(out)
        self._stderr = await _reader(err)
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


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_LIMIT)
    pipe = os.fdopen(fd, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


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


async def read_lines(stream: asyncio.StreamReader, limit: int = MAX_LINE) -> AsyncIterator[Line]:
    """Lines of `stream`; one longer than `limit` is cut to its first `limit` bytes, the
    rest read and dropped, so no line is ever held whole."""
    while True:
        try:
            line = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:
            if end.partial:
                yield Line(end.partial)
            return
        except asyncio.LimitOverrunError as overrun:
            yield await _long_line(stream, overrun.consumed, limit)
            continue
        yield Line(line)


async def _long_line(stream: asyncio.StreamReader, consumed: int, limit: int) -> Line:
    """The rest of a line longer than the buffer, `consumed` bytes of it buffered so far."""
    kept, dropped = bytearray(), 0
    while True:
        piece = await stream.readexactly(consumed)  # buffered already, without the newline
        try:
            piece += await stream.readuntil(b"\n")
            ended = True
        except asyncio.LimitOverrunError as overrun:
            consumed, ended = overrun.consumed, False
        except asyncio.IncompleteReadError as end:
            piece, ended = piece + end.partial, True
        room = max(limit - len(kept), 0)
        kept += piece[:room]
        dropped += max(len(piece) - room, 0)
        if ended:
            return Line(bytes(kept), dropped)


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


def kill_leftover(pid: int | None, pid_start: int | None, wait: float = STOP_GRACE) -> bool:
    """After a crash: kills the process group a dead server left behind. Returns True when
    there was one. The leader is recognised by its start time; once the leader is gone its
    pid cannot be reused while the group still exists, so the group is ours."""
    if pid is None:
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

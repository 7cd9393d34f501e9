"""The server's end of the spawner (`spawner.py`): it starts the spawner, sends it a
process to start with that process's pipes, and turns its reports into futures of the
pid and of the exit code. Should the spawner die, what it ran is killed and a new one is
started with the next request.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio

from claude_batch_server.accounts import Account
from claude_batch_server.jobs import landlock, spawner, wire
from claude_batch_server.jobs.lines import READ_LIMIT
from claude_batch_server.logs import log

REAPER_GRACE = 5.0  # seconds the reaper gives Claude Code after its SIGINT
SPAWNER_EXIT = REAPER_GRACE + 5.0  # seconds the spawner gets to stop what still runs
OPEN_FILES = 8192
LOST = -signal.SIGKILL  # the exit code of a job whose spawner died under it
T = TypeVar("T")


@dataclass(frozen=True)
class ProcessSpec:
    """A job's first process, as the spawner starts it."""

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


class SpawnError(RuntimeError):
    """The spawner could not start a job's process."""


class SpawnerClient:
    """Started with the server, and again should the spawner die."""

    def __init__(self) -> None:
        self._link: _SpawnerLink | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        async with self._starting:
            if self._link is None or not self._link.alive:
                self._link = await _SpawnerLink.open()

    async def spawn(self, spec: ProcessSpec, fds: list[int]) -> tuple[int, asyncio.Future[int]]:
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

    async def spawn(self, spec: ProcessSpec, fds: list[int]) -> tuple[int, asyncio.Future[int]]:
        request_id = next(self._ids)
        started: asyncio.Future[tuple[int, asyncio.Future[int]]]
        started = asyncio.get_running_loop().create_future()
        self._starting[request_id] = started
        request = wire.encode(_request(request_id, spec))
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
        if wire.STARTED in report:
            pid, exited = report["pid"], asyncio.get_running_loop().create_future()
            self._exits[pid] = exited
            started = self._starting.get(report[wire.STARTED])
            if started is None or started.done():  # its job gave up waiting: nobody runs it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            _resolve(started, (pid, exited))
        elif wire.EXITED in report:
            _resolve(self._exits.pop(report[wire.EXITED], None), report["status"])
        elif (started := self._starting.get(report[wire.FAILED])) and not started.done():
            started.set_exception(SpawnError(report["error"]))

    def _lost(self) -> None:
        """The spawner died: what it ran can no longer be waited for, so it is killed."""
        if self._starting or self._exits:
            log.error("the spawner died", running=len(self._exits))
        for started in self._starting.values():
            if not started.done():
                started.set_exception(SpawnError("the spawner died"))
        for pid, exited in self._exits.items():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
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


def _request(request_id: int, spec: ProcessSpec) -> wire.Request:
    account = spec.account
    return wire.Request(
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

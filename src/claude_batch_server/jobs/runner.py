"""Claude Code as an OS process of the job's user, in the manner of JupyterHub's spawners:
start, poll, stop.

The process runs with the user's uid, primary gid and supplementary groups (set by
subprocess itself: no preexec_fn), in a new session and so a process group of its own,
with a clean environment. Its first process is `reaper.py`, which runs Claude Code and
kills everything the run started once it ends, also what left the process group. Stopping
sends SIGTERM (the reaper passes a graceful SIGINT to Claude Code) and, should anything
outlive the grace period, SIGKILL to the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from claude_batch_server.accounts import Account

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
REAPER_GRACE = 5.0  # seconds the reaper gives Claude Code after its SIGINT
OPEN_FILES = 8192
READ_LIMIT = 1024 * 1024  # an asyncio line buffer; longer lines arrive in pieces
PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


@dataclass(frozen=True)
class RunSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    account: Account
    stdin: bytes


def install_reaper(data_dir: Path) -> list[str]:
    """Copies reaper.py where every user can read it; returns the command that runs it.

    The users run it with a system Python: the server's own may sit where they cannot go."""
    target = data_dir / "bin" / "reaper.py"
    target.parent.mkdir(mode=0o755, exist_ok=True)
    target.parent.chmod(0o755)
    shutil.copyfile(Path(__file__).with_name("reaper.py"), target)
    target.chmod(0o644)
    python = next((p for p in PYTHONS if os.access(p, os.X_OK)), sys.executable)
    return [python, "-I", "-S", str(target), str(REAPER_GRACE), str(OPEN_FILES), "--"]


class AgentProcess:
    def __init__(self, spec: RunSpec, reaper: list[str]) -> None:
        self.spec = spec
        self._reaper = reaper
        self._process: asyncio.subprocess.Process | None = None
        self.pid_start: int | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    async def start(self) -> None:
        account = self.spec.account
        self._process = await asyncio.create_subprocess_exec(
            *self._reaper,
            *self.spec.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.spec.cwd,
            env=self.spec.env,
            user=account.uid,
            group=account.gid,
            extra_groups=list(account.supplementary_gids),
            start_new_session=True,
            limit=READ_LIMIT,
        )
        self.pid_start = process_start_time(self.pid)
        await self._feed_stdin()

    async def _feed_stdin(self) -> None:
        assert self._process is not None and self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._process.stdin.write(self.spec.stdin)
            await self._process.stdin.drain()
        self._process.stdin.close()

    def stdout(self) -> AsyncIterator[bytes]:
        assert self._process is not None and self._process.stdout is not None
        return read_lines(self._process.stdout)

    def stderr(self) -> AsyncIterator[bytes]:
        assert self._process is not None and self._process.stderr is not None
        return read_lines(self._process.stderr)

    def poll(self) -> int | None:
        assert self._process is not None
        return self._process.returncode

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM to the reaper, SIGKILL to the group after `grace`; returns when all ended."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait(), grace)
        await self.clear_group()

    async def clear_group(self) -> None:
        """Kills whatever is still in the process group, and waits until it is empty."""
        _signal_group(self.pid, signal.SIGKILL)
        await self.wait()
        while group_alive(self.pid):
            await asyncio.sleep(0.02)


async def read_lines(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Lines of `stream`; one longer than the buffer comes in several pieces, none is lost."""
    while True:
        try:
            line = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:
            if end.partial:
                yield end.partial
            return
        except asyncio.LimitOverrunError as overrun:
            yield await stream.readexactly(overrun.consumed)
            continue
        yield line


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

"""Running the installed `claude-batch` command: in a subprocess, piped or on a terminal."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.jobs.conftest import JobWorld
from tests.support.api import Api
from tests.support.server import LiveServer
from tests.support.users import OsUser

CLI = Path(sys.executable).parent / "claude-batch"
RUN_DEADLINE = 120.0

# Makes the terminal on fd 0 the controlling one, then runs the command: getpass and
# the terminal checks of the client then meet a real terminal, as when a person types.
ON_TERMINAL = (
    "import fcntl, os, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@dataclass
class Cli:
    server: LiveServer
    home: Path
    running: list[Running] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Stops whatever `start` left running (a failed test may leave a follower)."""
        for command in self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                command.wait(deadline=0.1)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "CLAUDE_BATCH_SERVER": self.server.url,
            **extra,
        }

    def run(
        self, *args: str, stdin: str | None = None, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), *args],
            input=stdin or "",
            capture_output=True,
            text=True,
            env=self.env(**env),
            cwd=cwd or self.home,
            timeout=RUN_DEADLINE,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """Runs the command, expects exit 0, returns its stdout."""
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        return result.stdout

    def login(self, user: OsUser) -> subprocess.CompletedProcess[str]:
        result = self.run("login", "--user", user.name, "--password-stdin", stdin=user.password)
        assert result.returncode == 0, result.stderr
        return result

    def start(self, *args: str) -> Running:
        process = subprocess.Popen(
            [str(CLI), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
            cwd=self.home,
        )
        self.running.append(Running(process))
        return self.running[-1]

    def on_terminal(self, *args: str, answers: dict[str, str] | None = None) -> tuple[int, str]:
        return run_on_terminal([str(CLI), *args], self.env(TERM="xterm-256color"), answers or {})


@dataclass
class CliWorld:
    world: JobWorld
    member: Api
    cli: Cli

    @property
    def repo(self) -> str:
        return self.member.repo


@dataclass
class Running:
    """A command left running, its output collected line by line as it comes."""

    process: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=_collect, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    def wait(self, deadline: float = RUN_DEADLINE) -> int:
        """The exit code; a command still running after `deadline` s is killed (and fails)."""
        try:
            return self.process.wait(timeout=deadline)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for reader in self._readers:
                reader.join(timeout=10)
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()

    def out(self) -> str:
        return "".join(self.stdout)

    def err(self) -> str:
        return "".join(self.stderr)


def _collect(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def run_on_terminal(
    argv: list[str], env: dict[str, str], answers: dict[str, str], deadline: float = 60
) -> tuple[int, str]:
    """Runs `argv` on a pseudo-terminal; when the output shows a key of `answers`, types
    its value. Returns the exit code and everything the terminal showed."""
    main_fd, terminal_fd = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", ON_TERMINAL, *argv],
        stdin=terminal_fd,
        stdout=terminal_fd,
        stderr=terminal_fd,
        env=env,
        start_new_session=True,
    )
    os.close(terminal_fd)
    shown, pending, end = b"", dict(answers), time.monotonic() + deadline
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([main_fd], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # EIO: every writer of the terminal has gone
                break
            if not chunk:
                break
            shown += chunk
            for cue in [c for c in pending if c.encode() in shown]:
                os.write(main_fd, pending.pop(cue).encode())
        code = process.wait(timeout=max(1.0, end - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main_fd)
    return code, shown.decode(errors="replace")

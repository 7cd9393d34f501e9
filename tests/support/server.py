"""The real server in a subprocess on a loopback port, as users and scripts meet it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_BIN = Path(sys.executable).parent / "claude-batch-server"
START_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(condition: Any, deadline: float, what: str, interval: float = 0.05) -> Any:
    """Poll `condition()` until it returns something truthy, or fail after `deadline` s."""
    end = time.monotonic() + deadline
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > end:
            raise TimeoutError(f"waited {deadline}s for {what}")
        time.sleep(interval)


class LiveServer:
    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str],
        command: list[str] | None = None,
        cwd: Path | None = None,
        start_deadline: float = START_DEADLINE,
    ) -> None:
        """`command` (run in `cwd`) ends in the server; make forwards SIGTERM to it."""
        self.data_dir = data_dir
        self.command = command or [str(SERVER_BIN), "serve"]
        self.cwd = cwd or data_dir.parent  # no stray .env file is read
        self.start_deadline = start_deadline
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # one per server: several may share a DATA_DIR
        self.log_path = data_dir.parent / f"{data_dir.name}-{self.port}-server.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATA_DIR": str(data_dir),
            "LOG_FORMAT": "json",
            "CLAUDE_COMMAND": "true",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LiveServer:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(self._ready, self.start_deadline, f"the server on {self.url}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/openapi.json", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """kill -9, as a crash would."""
        self.stop(signal.SIGKILL)

    def restart(self) -> LiveServer:
        self.stop()
        return self.start()

    def inside(self, path: Path) -> Path:
        """`path` as the server and its jobs see it, in the server's own mount namespace
        (where its overlay workspaces are mounted)."""
        assert self.process is not None and self.process.poll() is None
        return Path(f"/proc/{self.process.pid}/root") / path.relative_to("/")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def login(self, username: str, password: str) -> str:
        with self.client() as client:
            response = client.post("/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token


ServerFactory = Callable[..., LiveServer]

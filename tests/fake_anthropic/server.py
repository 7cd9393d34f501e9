"""Running the fake Anthropic API on a loopback port, in a thread of the test process."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

import uvicorn

from .app import FakeState, create_app
from .records import RecordedRequest
from .script import Turn


class FakeAnthropic:
    """A fake Messages API; ``with FakeAnthropic() as fake: ... fake.url ...``.

    One instance serves any number of concurrent CLI runs: each conversation picks its
    script with a ``[script:NAME]`` (or ``[script:NAME:ARG]``) marker in its prompt;
    prompts without a marker get :attr:`default_script` (``"hello"``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = FakeState()
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        self.state.closing.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._sock = sock
        config = uvicorn.Config(
            create_app(self.state),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            loop="asyncio",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="fake-anthropic", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake Anthropic API did not start")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def stop(self) -> None:
        self.state.closing.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ address
    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the fake Anthropic API is not running")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        """The value for ``ANTHROPIC_BASE_URL``."""
        return f"http://{self._host}:{self.port}"

    # ------------------------------------------------------------------ scripts
    def add_script(self, name: str, turns: Iterable[Turn], *, repeat_last: bool = False) -> str:
        """Register (or replace) a script; returns its marker, e.g. ``"[script:NAME]"``."""
        self.state.add_script(name, turns, repeat_last=repeat_last)
        return marker(name)

    @property
    def default_script(self) -> str:
        return self.state.default_script

    @default_script.setter
    def default_script(self, name: str) -> None:
        self.state.default_script = name

    # ------------------------------------------------------------------ records
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (a copy), oldest first."""
        return self.state.records()

    def conversation(
        self,
        script: str | None = None,
        *,
        session_id: str | None = None,
        include_side: bool = False,
    ) -> list[RecordedRequest]:
        """The Messages requests of the agent's conversation(s), filtered, oldest first."""
        return [
            r
            for r in self.state.records()
            if r.kind == "messages"
            and (include_side or not r.side)
            and (script is None or r.script == script)
            and (session_id is None or r.session_id == session_id)
        ]

    def wait_for(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 30.0
    ) -> RecordedRequest:
        """Block until a recorded request matches (e.g. a slow stream has begun)."""
        return self.state.wait_for(predicate, timeout)

    def clear(self) -> None:
        """Forget recorded requests and transient-error attempt counts."""
        self.state.clear()


def marker(name: str, arg: str | None = None) -> str:
    """The prompt marker that selects a script: ``[script:NAME]`` or ``[script:NAME:ARG]``."""
    return f"[script:{name}:{arg}]" if arg is not None else f"[script:{name}]"

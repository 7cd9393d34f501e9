"""HTTP sent by a process of one OS user. The server knows a caller on this host by the user
owning its socket, not by its loopback address, so two local callers are two users'
processes. `LocalClient(server, user)` starts a small Python of the standard library alone
(the system's: the tests' venv is not readable by others) as that user, or as root without
one; `send` has it send requests all at once, each from its own source address, and
returns their answers (each also as it comes, if asked). Bodies (passwords) go through
its stdin, never its argv."""

from __future__ import annotations

import json
import pwd
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.support.server import LiveServer
from tests.support.users import OsUser

PYTHON = "/usr/bin/python3"
SCRIPT = r"""
import http.client, json, sys
from concurrent.futures import ThreadPoolExecutor, as_completed

def one(r):
    connection = http.client.HTTPConnection(
        r["host"], r["port"], timeout=120, source_address=(r["address"], 0)
    )
    try:
        connection.request(r["method"], r["path"], body=r["body"].encode(), headers=r["headers"])
        answer = connection.getresponse()
        body = answer.read().decode("utf-8", "replace")
        return {"status": answer.status, "headers": answer.getheaders(), "body": body}
    finally:
        connection.close()

for line in sys.stdin:
    batch = json.loads(line)
    with ThreadPoolExecutor(max_workers=len(batch)) as pool:
        sent = {pool.submit(one, request): index for index, request in enumerate(batch)}
        for answered in as_completed(sent):  # each as soon as it comes
            print(json.dumps([sent[answered], answered.result()]), flush=True)
"""


@dataclass
class Request:
    path: str
    address: str = "127.0.0.1"  # the source address the process binds
    method: str = "POST"
    json: Any = None
    form: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class LocalClient:
    def __init__(self, server: LiveServer, user: OsUser | None = None) -> None:
        self.server = server
        self.uid = user.uid if user else 0
        gid = pwd.getpwuid(self.uid).pw_gid
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [PYTHON, "-I", "-c", SCRIPT],
            user=self.uid,
            group=gid,
            extra_groups=[],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            text=True,
        )

    def send(
        self, *requests: Request, each: Callable[[httpx.Response], object] | None = None
    ) -> list[httpx.Response]:
        """All `requests` at once, in threads of the user's process; their answers in order.
        `each(answer)` is called for every answer as soon as it comes."""
        batch = [self._wire(request) for request in requests]
        assert self._process.stdin is not None and self._process.stdout is not None
        answers: list[httpx.Response | None] = [None] * len(batch)
        with self._lock:
            self._process.stdin.write(json.dumps(batch) + "\n")
            self._process.stdin.flush()
            for _ in batch:
                line = self._process.stdout.readline()
                assert line, f"the client process of uid {self.uid} ended"
                index, wire = json.loads(line)
                headers = [(name, value) for name, value in wire["headers"]]
                answer = httpx.Response(
                    wire["status"], headers=headers, content=wire["body"].encode()
                )
                answers[index] = answer
                if each is not None:
                    each(answer)
        return [answer for answer in answers if answer is not None]

    def login(self, address: str, username: str, password: str, **headers: str) -> httpx.Response:
        body = {"username": username, "password": password}
        return self.send(Request("/auth/login", address, json=body, headers=headers))[0]

    def _wire(self, request: Request) -> dict[str, Any]:
        headers = {"Host": f"127.0.0.1:{self.server.port}", **request.headers}
        body = ""
        if request.json is not None:
            body = json.dumps(request.json)
            headers["Content-Type"] = "application/json"
        elif request.form is not None:
            body = urlencode(request.form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return {
            "host": "127.0.0.1",
            "port": self.server.port,
            "address": request.address,
            "method": request.method,
            "path": request.path,
            "body": body,
            "headers": headers,
        }

    def close(self) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=130)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

"""The spawner's wire format, shared by the server's end (`spawner_client`) and the
spawner (`spawner`). Standard library only, as the spawner that imports it.

Requests, on a Unix stream socket: a 4-byte big-endian length and a JSON object
(`Request`), with the job's stdin, stdout and stderr attached as descriptors (SCM_RIGHTS)
along its first byte. Reports, on a second socket: JSON lines, one of
`{"started": id, "pid": pid}`, `{"failed": id, "error": text}` and
`{"exited": pid, "status": exit code, negative for a signal}`.
"""

from __future__ import annotations

import json
from typing import TypedDict

from claude_batch_server.jobs import landlock

HEADER = 4  # bytes of the length before each request
STREAMS = 3  # stdin, stdout, stderr
NO_START = 127  # the exit code of a job whose process could not be set up
STARTED, FAILED, EXITED = "started", "failed", "exited"  # what a report tells


class Request(TypedDict):
    id: int
    argv: list[str]
    files: dict[str, str]  # flag -> content, passed as flag=<a private file of the user's>
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    groups: list[int]
    grace: float
    nofile: int
    cgroups: list[str]  # the cgroup.procs files of the job's control group
    sandbox: landlock.Confinement | None  # None: the sandbox is off


def encode(request: Request) -> bytes:
    body = json.dumps(request).encode()
    return len(body).to_bytes(HEADER, "big") + body


def decode(body: bytes) -> Request:
    request: Request = json.loads(body)
    return request


def started(request_id: int, pid: int) -> bytes:
    return _report({STARTED: request_id, "pid": pid})


def failed(request_id: int, error: str) -> bytes:
    return _report({FAILED: request_id, "error": error})


def exited(pid: int, status: int) -> bytes:
    return _report({EXITED: pid, "status": status})


def _report(fields: dict[str, object]) -> bytes:
    return json.dumps(fields).encode() + b"\n"

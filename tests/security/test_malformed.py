"""Malformed and oversized input: a clear 4xx with a detail, never a 5xx, and a healthy
server afterwards."""

from __future__ import annotations

import socket

from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.api import Api
from tests.support.users import UserFactory


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def first_answer(port: int, data: bytes) -> bytes:
    """The head of the server's first answer to `data`, sent on a connection kept open (a
    client that half-closes may see none, whatever the server would have said), or b""
    when the server closed the connection before answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        answer = b""
        try:
            conn.sendall(data)
            while b"\r\n\r\n" not in answer and (chunk := conn.recv(65536)):
                answer += chunk
        except (BrokenPipeError, ConnectionResetError):  # refused before all was sent
            pass
    return answer.partition(b"\r\n\r\n")[0]


def test_a_requests_line_and_headers_are_bounded(
    job_world: JobWorldFactory, attacks: Attacks
) -> None:
    """httptools read a header of any size whole (and answered it); the server's memory
    would follow what any local user sends. Past 64 KiB: refused, or the connection closed."""
    world = job_world()
    port = world.server.port
    oversized = [
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
        b"GET /health?" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 0123456789\r\n" * 50_000 + b"\r\n",
    ]
    for request in oversized:
        answer = first_answer(port, request)
        attacks.tried()
        assert answer == b"" or answer.split(b" ")[1] in (b"400", b"431"), answer[:300]
    # a large cookie, as a browser may send, is still within it
    within = b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: c=" + b"a" * 32_000 + b"\r\n\r\n"
    assert first_answer(port, within).startswith(b"HTTP/1.1 200")


def test_malformed_and_oversized_input(job_world: JobWorldFactory, attacks: Attacks) -> None:
    world = job_world()
    alice = world.member()
    job_id = alice.create_job(alice.repo, "a job to poke at")["jobId"]
    http = alice.http
    json_headers = {"Content-Type": "application/json"}
    attempts = [
        ("POST", "/jobs", {"json": {"repository": alice.repo, "prompt": "x" * 10_000_000}}),
        ("POST", "/jobs", {"content": b"prompt=x", "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/jobs", {"content": b"{not json", "headers": json_headers}),
        ("POST", "/jobs", {"content": b"[" * 200_000 + b"]" * 200_000, "headers": json_headers}),
        (
            "POST",
            "/jobs",
            {"content": b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "headers": json_headers},
        ),
        ("POST", "/jobs", {"json": [1, 2, 3]}),
        ("POST", "/jobs", {"json": {"repository": ["x"], "prompt": {"a": 1}}}),
        ("POST", "/jobs", {"content": b"\xff\xfe\x00", "headers": json_headers}),
        (
            "POST",
            f"/jobs/{job_id}/images",
            {
                "content": b"--x\r\nbroken",
                "headers": {"Content-Type": "multipart/form-data; boundary=x"},
            },
        ),
        (
            "POST",
            f"/jobs/{job_id}/images",
            {"content": b"--x--", "headers": {"Content-Type": "multipart/form-data"}},
        ),
        ("POST", f"/jobs/{job_id}/images", {"files": [("other", ("a.png", b"x"))]}),
        ("POST", f"/jobs/{job_id}/images", {"json": {"file": "x"}}),
        ("POST", "/auth/login", {"json": {"username": "a" * 100_000, "password": "x"}}),
        ("POST", "/auth/login", {"json": {"username": "a\x00b", "password": "x"}}),
        ("POST", "/repositories/register", {"json": {"name": "n" * 10_000, "gitUrl": "/x"}}),
        ("GET", "/jobs", {"params": {"limit": "-1"}}),
        ("GET", "/jobs", {"params": {"limit": "99999999999999999999"}}),
        ("GET", f"/jobs/{'x' * 5000}", {}),
        ("GET", f"/jobs/{job_id}/events", {"headers": {"Last-Event-ID": "-5"}}),
        ("GET", f"/jobs/{job_id}/events", {"headers": {"Last-Event-ID": "abc"}}),
        ("GET", f"/jobs/{job_id}/events", {"headers": {"Last-Event-ID": str(2**64)}}),
        (
            "GET",
            f"/jobs/{job_id}/events",
            {"params": {"follow": "false"}, "headers": {"Last-Event-ID": str(2**63)}},
        ),
        ("GET", f"/jobs/{job_id}/events", {"headers": {"Last-Event-ID": "9" * 5000}}),
        ("GET", "/audit", {"params": {"since": "not-a-date"}}),
    ]
    for method, path, extra in attempts:
        response = http.request(method, path, **extra)  # type: ignore[arg-type]
        attacks.tried()
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
        if response.headers.get("content-type", "").startswith("application/json"):
            assert response.json()["detail"]

    garbage = raw_request(world.server.port, b"\x16\x03\x01 not http at all\r\n\r\n")
    attacks.tried()
    assert garbage == b"" or garbage.split(b" ")[1].startswith(b"4")

    assert http.get("/health").status_code == 200
    assert alice.job(job_id)["status"] == "created" and alice.job(job_id)["images"] == []


# Headers the server reads, or that a client may send anywhere, with hostile values.
HOSTILE_HEADERS: list[dict[str, bytes]] = [
    {"Last-Event-ID": str(2**64).encode()},
    {"Last-Event-ID": b"-" + b"9" * 400},
    {"Last-Event-ID": "\u0661\u0662".encode()},  # Arabic-Indic digits, which int() takes
    {"Last-Event-ID": b"1e3"},
    {"Range": b"bytes=" + b"9" * 400 + b"-"},
    {"Range": b"bytes=-" + b"9" * 400},
    {"Range": b"bytes=5-3"},
    {"Range": b"bytes=0-0,1-1"},
    {"Range": b"bytes=x-y"},
    {"Range": b"bytes=-"},
    {"Range": b"bytes=1_0-2_0"},
    {"Range": b"pages=1-2"},
    {"Authorization": b"Bearer a.b.c"},
    {"Authorization": b"Bearer " + "\u00e9".encode()},
    {"Authorization": b"Basic Zm9vOmJhcg=="},
    {"Authorization": b"Bearer"},
    {"Content-Type": b"application/json; charset=utf-7"},
    {"Content-Type": b"multipart/form-data; boundary="},
    {"X-Forwarded-For": b"999.999.999.999, ::ffff:zz, " + b"a" * 2000},
    {"Cookie": b"session=" + b"x" * 4000 + b"; csrf=\xff"},
    {"Accept": b"text/event-stream"},
    {"Accept-Encoding": b"gzip;q=abc"},
    {"If-Range": b"garbage"},
    {"Origin": b"null"},
]


# Times an admin may ask the audit trail for: every one answers, none is a 5xx.
ODD_TIMES = [
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999+14:00",
    "2020-01-01T00:00:00-23:59",
    "2020-01-01",
    "1e20",
    "-99999999999",
    str(2**64),
]


def test_every_route_with_hostile_headers(
    job_world: JobWorldFactory, users: UserFactory, attacks: Attacks
) -> None:
    """Every route of the OpenAPI document (and the pages outside it) under every hostile
    header: never a 5xx."""
    admins = users.group()
    world = job_world(ADMIN_GROUP=admins)
    alice = world.member()
    admin = Api(world.server, users.create(groups=(admins,)))
    world.apis.append(admin)
    for since in ODD_TIMES:
        response = admin.http.get("/audit", params={"since": since, "limit": 5})
        attacks.tried()
        assert response.status_code < 500, (since, response.text)
    job_id = alice.create_job(alice.repo, "a job to poke at")["jobId"]
    paths = alice.http.get("/openapi.json").json()["paths"]
    calls = [("GET", path) for path in ("/", "/ui/", "/health", "/metrics", "/swagger")]
    for path, operations in paths.items():
        for method in operations:
            if method.upper() == "DELETE" or path in ("/auth/logout", "/jobs/{job_id}/start"):
                continue  # they would end the token, the job or the repository under test
            concrete = path.replace("{job_id}", job_id).replace("{name}", alice.repo)
            calls.append((method.upper(), concrete))
    token = alice.token.encode()
    for method, path in calls:
        for hostile in HOSTILE_HEADERS:
            headers = {"Authorization": b"Bearer " + token, **hostile}
            params = {"follow": "false", "path": "README.md"}
            response = alice.http.request(method, path, headers=headers, params=params)
            attacks.tried()
            assert response.status_code < 500, (method, path, hostile, response.text[:500])
    for length in (b"99999999999999999999999", b"-1", b"1e9"):  # which no client library sends
        head = f"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.token}\r\n"
        answer = raw_request(
            world.server.port, head.encode() + b"Content-Length: " + length + b"\r\n\r\n"
        )
        attacks.tried()
        assert answer == b"" or answer.split(b" ")[1].startswith(b"4"), answer[:300]
    assert alice.http.get("/health").status_code == 200

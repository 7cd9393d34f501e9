"""Malformed and oversized input: a clear 4xx with a detail, never a 5xx, and a healthy
server afterwards."""

from __future__ import annotations

import socket

from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


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
        ("GET", "/audit", {"params": {"since": "not-a-date"}}),
    ]
    for method, path, extra in attempts:
        response = http.request(method, path, **extra)  # type: ignore[arg-type]
        attacks.tried()
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
        if response.headers.get("content-type", "").startswith("application/json"):
            assert response.json()["detail"]

    huge_header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
    attacks.tried()
    answer = raw_request(world.server.port, huge_header)
    assert answer == b"" or answer.split(b" ")[1].startswith(b"4")
    garbage = raw_request(world.server.port, b"\x16\x03\x01 not http at all\r\n\r\n")
    attacks.tried()
    assert garbage == b"" or garbage.split(b" ")[1].startswith(b"4")

    assert http.get("/health").status_code == 200
    assert alice.job(job_id)["status"] == "created" and alice.job(job_id)["images"] == []

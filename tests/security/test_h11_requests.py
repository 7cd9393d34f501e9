"""What the server relied on from httptools still works under h11 (cli.py), and what a local
user sends before the app runs stays bounded: pipelined requests, chunked uploads,
`Expect: 100-continue`, HEAD, a large dashboard cookie, invalid header bytes, a body sent
to a route that does not read it."""

from __future__ import annotations

import json
import socket

from tests.fake_anthropic.images import tiny_png
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks


def read_answers(conn: socket.socket, count: int, heads_only: int = 0) -> list[tuple[bytes, bytes]]:
    """`count` answers (head, body) read off the connection, each with a Content-Length or
    chunked, but the first `heads_only` (to HEAD), which have none; stops early when the
    server closes it."""
    buffer = b""
    answers: list[tuple[bytes, bytes]] = []
    while len(answers) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head, rest = buffer[:head_end], buffer[head_end + 4 :]
            if head.startswith(b"HTTP/1.1 100 ") or len(answers) < heads_only:
                answers.append((head, b""))
                buffer = rest
                continue
            headers = head.lower()
            if b"content-length:" in headers:
                length = int(headers.split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    answers.append((head, rest[:length]))
                    buffer = rest[length:]
                    continue
            elif b"transfer-encoding: chunked" in headers and b"\r\n0\r\n\r\n" in b"\r\n" + rest:
                body, _, buffer = (b"\r\n" + rest).partition(b"\r\n0\r\n\r\n")
                answers.append((head, body))
                continue
        chunk = conn.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return answers


def status(answer: tuple[bytes, bytes]) -> int:
    return int(answer[0].split(b" ")[1])


def test_h11_keeps_what_clients_rely_on(job_world: JobWorldFactory, attacks: Attacks) -> None:
    world = job_world()
    alice = world.member()
    port = world.server.port
    auth = f"Authorization: Bearer {alice.token}\r\n".encode()
    job_id = alice.create_job(alice.repo, "a job to upload to")["jobId"]

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=30)

    # pipelined: three requests in one write, three answers in order, on one connection
    with connect() as conn:
        get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        job = f"GET /jobs/{job_id} HTTP/1.1\r\nHost: x\r\n".encode() + auth + b"\r\n"
        conn.sendall(get + job + get)
        answers = read_answers(conn, 3)
        attacks.tried()
        assert [status(a) for a in answers] == [200, 200, 200]
        assert json.loads(answers[1][1])["jobId"] == job_id

    # many pipelined requests at once: answered in turn, the server reading as it answers
    with connect() as conn:
        conn.sendall(get * 500)
        attacks.tried()
        assert [status(a) for a in read_answers(conn, 500)] == [200] * 500

    # a multipart upload sent chunked, after `Expect: 100-continue`
    png = tiny_png(2, 2, (255, 0, 0))
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="p.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--b--\r\n"
    )
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    with connect() as conn:
        conn.sendall(
            f"POST /jobs/{job_id}/images HTTP/1.1\r\nHost: x\r\n".encode()
            + auth
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        )
        answers = read_answers(conn, 1)
        attacks.tried()
        assert status(answers[0]) == 100, answers
        conn.sendall(chunked + b"0\r\n\r\n")
        answers = read_answers(conn, 1)
        assert status(answers[0]) == 201, answers
        assert json.loads(answers[0][1]) == [{"name": "p.png", "size": len(png)}]
        # kept alive: the next request on it is answered
        conn.sendall(get)
        assert status(read_answers(conn, 1)[0]) == 200

    # HEAD: a head, no body, and the connection usable afterwards
    with connect() as conn:
        conn.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n" + get)
        head, after = read_answers(conn, 2, heads_only=1)
        attacks.tried()
        assert status(head) in (200, 405) and head[1] == b""
        assert status(after) == 200 and json.loads(after[1])

    # a dashboard's large cookie and a CSRF header, within the bound
    with connect() as conn:
        conn.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: session="
            + b"s" * 16_000
            + b"; csrf="
            + b"c" * 4_000
            + b"\r\nX-CSRF-Token: "
            + b"c" * 4_000
            + b"\r\n\r\n"
        )
        attacks.tried()
        assert status(read_answers(conn, 1)[0]) == 200

    # invalid bytes in a header's name or value: a 400, never a 5xx
    for bad in (b"X-A\x00: 1", b"X-A: a\x00b", b"X A: 1", b"X-A: a\rb", b"\xff: 1"):
        with connect() as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\n\r\n")
            answers = read_answers(conn, 1)
            attacks.tried()
            assert not answers or status(answers[0]) == 400, (bad, answers)

    # a large chunked body to a route that does not read it: answered, the rest not kept
    with connect() as conn:
        conn.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.sendall(b"%x\r\n%s\r\n" % (1_000_000, b"x" * 1_000_000))
        answers = read_answers(conn, 1)
        attacks.tried()
        assert answers and 400 <= status(answers[0]) < 500, answers

    # a JSON page at the edges of `after` and `limit`: a whole, valid answer
    events = f"/jobs/{job_id}/events"
    for params in ({"after": 2**63 - 1, "limit": 1}, {"after": 0, "limit": 1000}, {"limit": 1}):
        page = alice.http.get(events, params={"follow": "false", **params})
        attacks.tried()
        assert page.status_code == 200 and isinstance(json.loads(page.content), list), params
    for params in ({"after": 2**63}, {"limit": 0}, {"limit": 1001}, {"follow": "maybe"}):
        page = alice.http.get(events, params={"follow": "false", **params})
        attacks.tried()
        assert 400 <= page.status_code < 500 and page.json()["detail"], params

    assert alice.http.get("/health").status_code == 200

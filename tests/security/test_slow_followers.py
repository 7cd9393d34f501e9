"""Followers of a job's events (`GET /jobs/{id}/events`) that never read: one that falls
behind reads its pages from the database itself (jobs/feeds.py), and holds its page and its
frames while its write waits on the client. Nothing bounds how many a user may open: the
server's memory grows with each of them, until the kernel kills it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_anthropic import FakeAnthropic, text
from tests.fake_anthropic.script import tool
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.server import wait_for

TURNS = 8  # assistant messages of ...
LARGE = 2_000_000  # ... characters each: pages of a few events
FOLLOWERS = 24
BOUND = 256 * 2**20  # bytes of memory all the followers of one user may cost the server


def resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def has_data(follower: socket.socket) -> bool:
    try:
        return b"data:" in follower.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False


@pytest.fixture
def followers() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for follower in opened:
            follower.close()


@pytest.mark.xfail(
    strict=True,
    reason="each follower that does not read holds a page of events (up to PAGE_BYTES plus"
    " one event of up to 8 MiB) and its frames; a user may open any number of them",
)
def test_followers_that_never_read_do_not_grow_the_servers_memory_without_bound(
    job_world: JobWorldFactory,
    fake_anthropic: FakeAnthropic,
    attacks: Attacks,
    followers: list[socket.socket],
) -> None:
    say = [tool("Bash", {"command": "true"}, say=f"{n}" + "a" * LARGE) for n in range(TURNS)]
    script = fake_anthropic.add_script("large-messages", [*say, text("Done.")])
    world = job_world()
    alice = world.member()
    job = alice.run(alice.repo, f"Talk {script}")["jobId"]
    assert alice.wait_ended(job)["status"] == "completed"
    assert world.server.process is not None
    server = world.server.process.pid
    before = resident(server)
    host, port = world.server.url.removeprefix("http://").split(":")
    request = (
        f"GET /jobs/{job}/events HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {alice.token}\r\n\r\n"
    ).encode()
    for _ in range(FOLLOWERS):
        follower = socket.create_connection((host, int(port)))
        follower.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        follower.sendall(request)
        followers.append(follower)
        attacks.tried()
    # each has its first page read by now, and written as far as the client lets it
    wait_for(lambda: all(map(has_data, followers)), 60, "every follower's first event")
    grown = resident(server) - before
    assert grown < BOUND, f"{FOLLOWERS} followers cost the server {grown // 2**20} MiB"

"""Clients of a job's events (`GET /jobs/{id}/events`) that never read: a follower that
falls behind reads its pages from the database itself (jobs/feeds.py), and holds its page
and its frames while its write waits on the client; so does a request of one JSON page
(`?follow=false`). However many a user opens, they hold at most FOLLOWER_PAGES_PER_USER
pages at once: the others wait for one of those to be written out or closed, holding none,
and other users' followers are not held up."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from claude_batch_server.jobs.feeds import FOLLOWER_PAGES_PER_USER
from tests.fake_anthropic import FakeAnthropic, text
from tests.fake_anthropic.script import tool
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.api import Api
from tests.support.server import wait_for

TURNS = 8  # assistant messages of ...
LARGE = 2_000_000  # ... characters each: pages of a few events (PAGE_BYTES is 4 Mi)
FOLLOWERS = 24
# What one page of this transcript held in a write costs the server, as its RSS shows it:
# about 6 MB of events (up to PAGE_BYTES and the event past it), their frames or JSON, the
# write's copy of them, the rows the database driver fetched with them (here all 16 MB),
# and what the allocator keeps of all that. Unbounded, 24 followers cost it about 420 MiB.
PAGE_COST = 48 * 2**20
BOUND = FOLLOWER_PAGES_PER_USER * PAGE_COST


def resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def peek(follower: socket.socket) -> bytes:
    """What the server sent the follower so far, as far as its small buffer holds it."""
    try:
        return follower.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def answered(follower: socket.socket) -> bool:
    return peek(follower).startswith(b"HTTP/1.1 200 ")


def served(clients: list[socket.socket], marker: bytes) -> list[socket.socket]:
    """Those sent events (`marker` in what they were sent): each holds a page it does not
    read."""
    return [client for client in clients if marker in peek(client)]


def never_reading(api: Api, target: str) -> socket.socket:
    host, port = api.server.url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sendall(
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {api.token}\r\n\r\n".encode()
    )
    return client


def served_in_turns(clients: list[socket.socket], marker: bytes) -> None:
    """Closes those served, each in the middle of its page, until all were: the others get
    theirs in turn, as many at once as the budget allows."""
    waiting = clients[:]
    while waiting:
        for client in served(waiting, marker):
            client.close()
            waiting.remove(client)
        due = min(FOLLOWER_PAGES_PER_USER, len(waiting))
        wait_for(lambda: len(served(waiting, marker)) >= due, 60, "the next pages")  # noqa: B023
        assert len(served(waiting, marker)) == due


def followed(api: Api, job_id: str) -> list[dict[str, Any]]:
    """The job's events as a follower that reads them gets them, up to the end."""
    events = []
    with api.http.stream("GET", f"/jobs/{job_id}/events", timeout=httpx.Timeout(120)) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: end"):
                return events
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:")))
    raise AssertionError(f"the stream ended without its end: {len(events)} events")


def transcript(api: Api, job_id: str) -> list[int]:
    """The job's sequence numbers, read page by page (`follow=false`)."""
    seqs: list[int] = []
    while page := api.http.get(
        f"/jobs/{job_id}/events", params={"follow": "false", "after": seqs[-1] if seqs else 0}
    ).json():
        seqs += [event["seq"] for event in page]
    return seqs


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


def test_followers_that_never_read_hold_a_few_pages_of_their_user_at_most(
    job_world: JobWorldFactory,
    fake_anthropic: FakeAnthropic,
    attacks: Attacks,
    clients: list[socket.socket],
) -> None:
    say = [tool("Bash", {"command": "true"}, say=f"{n}" + "a" * LARGE) for n in range(TURNS)]
    large = fake_anthropic.add_script("large-messages", [*say, text("Done.")])
    small = fake_anthropic.add_script("small-talk", [text("Hello.")])
    world = job_world()
    alice, bob = world.member(), world.member()
    job = alice.run(alice.repo, f"Talk {large}")["jobId"]
    bobs = bob.run(bob.repo, f"Greet {small}")["jobId"]
    assert alice.wait_ended(job)["status"] == "completed"
    assert bob.wait_ended(bobs)["status"] == "completed"
    events = transcript(alice, job)
    assert len(events) > TURNS and events == list(range(1, len(events) + 1))
    assert world.server.process is not None
    server = world.server.process.pid
    before = resident(server)

    # followers, then requests of the JSON page, that never read
    for target, marker in (
        (f"/jobs/{job}/events", b"data:"),
        (f"/jobs/{job}/events?follow=false", b'"seq"'),
    ):
        opened = [never_reading(alice, target) for _ in range(FOLLOWERS)]
        clients += opened
        attacks.tried(FOLLOWERS)
        wait_for(lambda: all(map(answered, opened)), 60, "every answer")  # noqa: B023
        wait_for(
            lambda: len(served(opened, marker)) >= FOLLOWER_PAGES_PER_USER,  # noqa: B023
            60,
            "the first pages",
        )
        # bob's follower, which reads his job's transcript from the database too, is served
        assert [event["seq"] for event in followed(bob, bobs)] == transcript(bob, bobs)
        assert len(served(opened, marker)) == FOLLOWER_PAGES_PER_USER  # the rest wait
        grown = resident(server) - before
        assert grown < BOUND, f"{FOLLOWERS} clients cost the server {grown // 2**20} MiB"
        served_in_turns(opened, marker)

    # none of the permits were lost: she follows and reads her whole transcript
    assert [event["seq"] for event in followed(alice, job)] == events
    assert transcript(alice, job) == events

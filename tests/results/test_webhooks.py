"""Webhooks: each job's end POSTed to WEBHOOK_URL and to the job's own `options.webhook`,
signed as Standard Webhooks say (checked with the specification's reference package),
retried after a failure, also across a restart; every attempt listed for the job's owner."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.fake_anthropic import FakeAnthropic, marker
from tests.jobs.conftest import JobWorldFactory
from tests.results.support import change_script, settled_result
from tests.support.server import wait_for

SECRET = "whsec_" + base64.b64encode(b"a webhook secret of 32 bytes....").decode()
RETRY_DEADLINE = 60  # the first retry comes 5 s after the first attempt


def recorded(user: Any, job_id: str, count: int) -> list[dict[str, Any]]:
    """The job's attempts once `count` are listed: the server records an attempt after
    its answer came, so the receiver may have it a moment before the list does."""

    def listed() -> list[dict[str, Any]] | None:
        attempts = user.http.get(f"/jobs/{job_id}/deliveries").json()
        return attempts if len(attempts) >= count else None

    return wait_for(listed, 30, f"{count} attempts listed")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on loopback; answers 500 while `failing`, else 204."""

    url: str
    received: list[Received] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)  # paths that fail for now
    fail_once: set[str] = field(default_factory=set)  # paths whose first request fails
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Received) -> int:
        with self.lock:
            self.received.append(request)
            if request.path in self.fail_once:
                self.fail_once.discard(request.path)
                return 500
            return 500 if request.path in self.failing else 204

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    hook = Receiver(f"http://127.0.0.1:{server.server_address[1]}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            request = Received(self.path, dict(self.headers.items()), self.rfile.read(length))
            self.send_response(hook.answer(request))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


def verified(request: Received) -> dict[str, Any]:
    """The body, once the reference implementation has checked its signature."""
    payload: dict[str, Any] = Webhook(SECRET).verify(request.body, request.headers)
    return payload


def test_each_end_is_signed_delivered_retried_and_listed(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, receiver: Receiver
) -> None:
    world = job_world(
        WEBHOOK_URL=f"{receiver.url}/server/token-in-path",
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
    )
    alice = world.member()
    receiver.fail_once.add("/alice")
    job = alice.run(
        alice.repo,
        f"Change it {change_script(fake_anthropic)}",
        options={"webhook": f"{receiver.url}/alice", "branch": "feature/hooked"},
    )
    assert alice.wait_ended(job["jobId"])["status"] == "completed"
    pushed = settled_result(alice, job["jobId"])
    assert pushed["pushed"] is True

    own = wait_for(lambda: receiver.at("/alice")[1:], RETRY_DEADLINE, "the retry")
    first, retry = receiver.at("/alice")[:2]
    assert own  # the second request: the retry after the 500
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]  # one message, twice
    assert first.body == retry.body
    for request in (first, retry):
        payload = verified(request)
        assert payload["type"] == "job.ended"
        assert payload["data"]["jobId"] == job["jobId"]
        assert payload["data"]["status"] == "completed"
        assert payload["data"]["result"] == pushed  # sent once the push was done
    server_hook = wait_for(lambda: receiver.at("/server/token-in-path"), 30, "WEBHOOK_URL")
    assert verified(server_hook[0])["data"]["jobId"] == job["jobId"]
    assert len(receiver.at("/server/token-in-path")) == 1  # delivered at once: no retry

    attempts = recorded(alice, job["jobId"], 3)  # two of hers, one of the server's
    mine = [a for a in attempts if a["url"] == f"{receiver.url}/alice"]
    assert [(a["attempt"], a["status"]) for a in mine] == [(1, 500), (2, 204)]
    assert mine[0]["error"] == "HTTP 500" and mine[1]["error"] is None
    assert mine[0]["time"] <= mine[1]["time"]
    # the server's own hook is listed without the path, which may hold a token
    shown = [a for a in attempts if a not in mine]
    assert [(a["url"], a["status"]) for a in shown] == [(f"{receiver.url}/…", 204)]

    # another user sees none of it
    mallory = world.member()
    assert mallory.http.get(f"/jobs/{job['jobId']}/deliveries").status_code == 404
    # and a job of theirs with a webhook to a host not allowed is refused before it exists
    refused = mallory.http.post(
        "/jobs",
        json={
            "repository": mallory.repo,
            "prompt": "p",
            "options": {"webhook": "http://localhost:9/steal"},
        },
    )
    assert refused.status_code == 400 and "WEBHOOK_ALLOWED_HOSTS" in refused.json()["detail"]
    for url in ("ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/x", "not a url"):
        response = mallory.http.post(
            "/jobs", json={"repository": mallory.repo, "prompt": "p", "options": {"webhook": url}}
        )
        assert response.status_code == 400, (url, response.text)
    assert mallory.jobs_in("created") == []


def test_a_pending_retry_survives_a_restart(
    job_world: JobWorldFactory, receiver: Receiver, database_url: str
) -> None:
    """On both databases; and with no WEBHOOK_SECRET, signed with one made once."""
    world = job_world(WEBHOOK_URL=f"{receiver.url}/hook", DATABASE_URL=database_url)
    carol = world.member()
    receiver.failing.add("/hook")
    job = carol.run(carol.repo, f"Say hello {marker('hello')}")
    assert carol.wait_ended(job["jobId"])["status"] == "completed"
    recorded(carol, job["jobId"], 1)
    world.server.kill()  # the next try is 5 s away, and only in the database
    receiver.failing.discard("/hook")
    world.server.start()

    delivered = wait_for(lambda: receiver.at("/hook")[1:], RETRY_DEADLINE, "the retry")
    key_file = world.server.data_dir / "webhook.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    for request in receiver.at("/hook"):
        payload = Webhook(key_file.read_text().strip()).verify(request.body, request.headers)
        assert payload["data"]["jobId"] == job["jobId"]
    assert delivered[0].headers["webhook-id"] == receiver.at("/hook")[0].headers["webhook-id"]
    attempts = recorded(carol, job["jobId"], 2)
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 500), (2, 204)]

"""Several server processes on one PostgreSQL and one DATA_DIR, as behind one proxy: a job
that one of them runs is followed, read, cancelled and resumed through another; a job
queued on a full one runs on another; a crashed one's jobs are recovered, and nobody's
live jobs are. With several servers, workspaces are plain directories (`copy` here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_anthropic import DEFAULT_TEXT, FakeAnthropic, Hang, bash, marker, text, write_file
from tests.jobs.conftest import JobWorld, JobWorldFactory
from tests.jobs.test_stopping import processes_of
from tests.support.api import Api
from tests.support.postgres import PostgresCluster
from tests.support.server import LiveServer, wait_for

pytestmark = pytest.mark.postgres

WORKER = "multiserver-worker"
SLEEPER = "multiserver-sleeper"

Servers = Callable[..., JobWorld]


@pytest.fixture
def servers(
    job_world: JobWorldFactory, postgres: PostgresCluster, open_tmp: Path
) -> Iterator[Servers]:
    """`servers(**settings)`: one more server on the test's PostgreSQL database and DATA_DIR."""
    url = postgres.create_database()
    shared = open_tmp / "shared-data"
    shared.mkdir()
    yield lambda **settings: job_world(data_dir=shared, DATABASE_URL=url, **settings)


def through(world: JobWorld, api: Api) -> Api:
    """The same user, talking to `world`'s server."""
    door = Api(world.server, api.user)
    world.apis.append(door)
    return door


def ran_on(server: LiveServer, job_id: str) -> bool:
    """Whether `server` started the job's agent (its log says so)."""
    for line in server.log().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "agent started" and record.get("job") == job_id:
                return True
    return False


def sleeping(api: Api, seconds: int) -> bool:
    return any(f"sleep {seconds}" in line for line in processes_of(api))


def follow_until(api: Api, job_id: str, seen: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """Reads the job's live event stream until an event for which `seen` is true; returns the
    events read."""
    events: list[Any] = []
    with api.http.stream("GET", f"/jobs/{job_id}/events", timeout=httpx.Timeout(120)) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:")))
                if isinstance(events[-1], dict) and seen(events[-1]):
                    return events
    raise AssertionError(f"the stream ended before the event looked for: {events}")


def test_a_job_run_by_one_server_is_served_by_another(
    servers: Servers, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script(
        WORKER, [write_file("notes.md", "# From A\n"), bash("sleep 1000"), text("Slept.")]
    )
    first = servers()
    alice = first.member()
    job_id = alice.run(alice.repo, f"Work {marker(WORKER)}")["jobId"]
    wait_for(lambda: sleeping(alice, 1000), 60, "the agent's sleep to start")
    assert ran_on(first.server, job_id)

    # a second server starts while the job runs on the first: its recovery leaves it be
    second = servers()
    bob_door = through(second, alice)
    assert bob_door.job(job_id)["status"] == "running"

    # followed live through the second: events arrive while the job still runs
    events = follow_until(bob_door, job_id, lambda event: "sleep 1000" in json.dumps(event))
    assert any(event["type"] == "server" for event in events)  # the run's start mark
    assert bob_door.job(job_id)["status"] == "running"

    # read through the second: the file the job wrote, and the diff
    listing = bob_door.http.get(f"/jobs/{job_id}/files").json()
    assert "notes.md" in [entry["name"] for entry in listing]
    content = bob_door.http.get(f"/jobs/{job_id}/files/content", params={"path": "notes.md"})
    assert content.json()["content"] == "# From A\n"
    assert "+# From A" in bob_door.http.get(f"/jobs/{job_id}/diff").text

    # cancelled through the second: the first stops it, and nothing of alice's is left
    assert bob_door.http.post(f"/jobs/{job_id}/cancel").status_code == 202
    cancelled = bob_door.wait_ended(job_id, deadline=60)
    assert cancelled["status"] == "cancelled"
    assert processes_of(alice) == []

    # resumed through the second, in the same workspace and session
    resumed = bob_door.http.post(f"/jobs/{job_id}/resume", json={"prompt": marker("hello")})
    assert resumed.status_code == 202
    again = bob_door.wait_ended(job_id)
    assert again["status"] == "completed", again["error"]
    assert again["output"] == DEFAULT_TEXT
    assert again["sessionId"] == cancelled["sessionId"]
    marks = [event["event"] for event in alice.events(job_id) if event["type"] == "server"]
    assert [mark["event"] for mark in marks] == ["run.started", "run.ended"] * 2
    assert "+# From A" in alice.http.get(f"/jobs/{job_id}/diff").text


def test_a_job_queued_on_a_full_server_runs_on_another(
    servers: Servers, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script("multiserver-hang", [Hang()])
    # MAX_CONCURRENT_JOBS counts the running jobs of every server: the first may run one,
    # the second a second one
    first, second = servers(MAX_CONCURRENT_JOBS="1"), servers(MAX_CONCURRENT_JOBS="2")
    alice = first.member()
    busy = alice.run(alice.repo, f"Hang {marker('multiserver-hang')}")["jobId"]
    alice.wait_status(busy, {"running"})

    queued = alice.run(alice.repo, f"Then me {marker('hello')}")["jobId"]

    assert alice.wait_ended(queued)["status"] == "completed"
    assert ran_on(second.server, queued) and not ran_on(first.server, queued)
    assert alice.http.post(f"/jobs/{busy}/cancel").status_code == 202
    assert alice.wait_ended(busy)["status"] == "cancelled"


def test_a_listing_shows_at_once_what_another_server_changed(
    servers: Servers, fake_anthropic: FakeAnthropic
) -> None:
    """A server keeps the listing pages it sent while the database's count of changes to
    the user's jobs stays the same (api/listings.py): another server's changes count too."""
    first, second = servers(), servers()
    alice = first.member()
    elsewhere = through(second, alice)
    made = [alice.create_job(alice.repo, f"Wait {i} {marker('hello')}")["jobId"] for i in range(3)]

    def listed() -> list[tuple[str, str]]:
        page = alice.http.get("/jobs").json()["jobs"]
        return [(job["jobId"], job["status"]) for job in page]

    assert listed() == listed() == [(job, "created") for job in made[::-1]]
    assert elsewhere.http.delete(f"/jobs/{made[2]}").status_code == 204
    assert listed() == [(made[1], "created"), (made[0], "created")]
    assert elsewhere.http.post(f"/jobs/{made[1]}/start").status_code == 202
    assert elsewhere.wait_ended(made[1])["status"] == "completed"
    assert listed() == [(made[1], "completed"), (made[0], "created")]
    new = elsewhere.create_job(alice.repo, "One more")["jobId"]
    assert listed() == [(new, "created"), (made[1], "completed"), (made[0], "created")]
    assert alice.http.get("/jobs").json()["jobs"][1] == alice.job(made[1])


def test_a_crashed_servers_jobs_are_recovered_and_no_live_job_is(
    servers: Servers, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script(SLEEPER, [bash("sleep 1000"), text("Slept.")])
    fake_anthropic.add_script(SLEEPER + "-2", [bash("sleep 1001"), text("Slept.")])
    first, second = servers(), servers()
    alice = first.member()
    other = through(second, alice)
    on_first = alice.run(alice.repo, f"Sleep {marker(SLEEPER)}")["jobId"]
    on_second = other.run(alice.repo, f"Sleep {marker(SLEEPER + '-2')}")["jobId"]
    wait_for(lambda: sleeping(alice, 1000) and sleeping(alice, 1001), 60, "both sleeps")
    assert ran_on(first.server, on_first) and ran_on(second.server, on_second)

    first.server.kill()

    # the second server ends the job the dead one ran
    ended = other.wait_ended(on_first, deadline=60)
    assert ended["status"] == "failed"
    assert "server stopped" in ended["error"]
    wait_for(lambda: not sleeping(alice, 1000), 30, "the dead server's job to be gone")

    # the first comes back: its recovery at start leaves the second's live job alone
    first.server.start()
    assert alice.job(on_second)["status"] == "running"
    assert sleeping(alice, 1001)

    # a DELETE through the first stops the job on the second, then removes it
    assert alice.http.delete(f"/jobs/{on_second}").status_code == 204
    assert other.http.get(f"/jobs/{on_second}").status_code == 404
    assert not (first.server.data_dir / "workspaces" / on_second).exists()
    assert processes_of(alice) == []

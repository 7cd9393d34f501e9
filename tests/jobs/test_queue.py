"""The queue: limits that hold at every instant, first in first out per user, fairness
between users; on SQLite, and on PostgreSQL with two server processes sharing it."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path

import pytest

from claude_batch_server.jobs.queue import new_owner_id, owner_is_dead, owner_is_here
from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorld, JobWorldFactory
from tests.support.api import Api, home_of
from tests.support.postgres import PostgresCluster

NAP = "nap"


def intervals(jobs: list[dict[str, object]]) -> list[tuple[datetime, datetime, str]]:
    return [
        (
            datetime.fromisoformat(str(j["startedAt"])),
            datetime.fromisoformat(str(j["completedAt"])),
            str(j["user"]),
        )
        for j in jobs
    ]


def most_at_once(spans: list[tuple[datetime, datetime, str]], user: str | None = None) -> int:
    """The largest number of the spans (of `user`) that overlap at one instant."""
    points = sorted(
        [(start, 1) for start, _, who in spans if user in (None, who)]
        + [(end, -1) for _, end, who in spans if user in (None, who)]
    )
    current = best = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def run_all(members: list[Api], per_member: int) -> list[dict[str, object]]:
    started = [
        (api, api.run(api.repo, f"Nap {i} {marker(NAP)}")["jobId"])
        for i in range(per_member)
        for api in members
    ]
    done = [api.wait_ended(job_id, deadline=300) for api, job_id in started]
    assert {job["status"] for job in done} == {"completed"}, done
    return done


@pytest.fixture
def naps(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.add_script(NAP, [bash("sleep 1"), text("Rested.")])


@pytest.mark.usefixtures("naps")
def test_limits_hold_at_every_instant(job_world: JobWorldFactory) -> None:
    world = job_world(MAX_CONCURRENT_JOBS="2", MAX_CONCURRENT_JOBS_PER_USER="1")
    members = [world.member() for _ in range(3)]
    spans = intervals(run_all(members, 2))
    assert most_at_once(spans) == 2
    for api in members:
        assert most_at_once(spans, api.user.name) == 1


@pytest.mark.usefixtures("naps")
def test_fifo_per_user_and_fair_between_users(job_world: JobWorldFactory) -> None:
    world = job_world(MAX_CONCURRENT_JOBS="1")
    alice, bob = world.member(), world.member()
    alice_jobs = [alice.run(alice.repo, f"A{i} {marker(NAP)}")["jobId"] for i in range(4)]
    bob_job = bob.run(bob.repo, f"B {marker(NAP)}")["jobId"]
    done = {job_id: alice.wait_ended(job_id, 300) for job_id in alice_jobs}
    done[bob_job] = bob.wait_ended(bob_job, 300)
    order = sorted(done, key=lambda job_id: str(done[job_id]["startedAt"]))
    assert order[0] == alice_jobs[0]
    assert order[1] == bob_job  # not behind all of alice's
    assert [j for j in order if j != bob_job] == alice_jobs


def test_one_users_concurrent_jobs_keep_their_state(job_world: JobWorldFactory) -> None:
    # without the sandbox, which keeps jobs from writing ~/.claude.json at all: concurrent
    # runs of the CLI writing it must leave it whole
    world = job_world(MAX_CONCURRENT_JOBS="4", JOB_SANDBOX="off")
    alice = world.member()
    jobs = [alice.run(alice.repo, f"Job {i} {marker('two-answers')}")["jobId"] for i in range(4)]
    first = [alice.wait_ended(job_id, 300) for job_id in jobs]
    assert [job["output"] for job in first] == ["First answer."] * 4
    for job_id in jobs:
        assert alice.http.post(f"/jobs/{job_id}/resume", json={"prompt": "More"}).status_code == 202
    second = [alice.wait_ended(job_id, 300) for job_id in jobs]
    assert [job["output"] for job in second] == ["Second answer."] * 4
    assert len({job["sessionId"] for job in second}) == 4
    json.loads((home_of(alice.user) / ".claude.json").read_text())


@pytest.mark.postgres
@pytest.mark.usefixtures("naps")
def test_two_servers_share_one_postgres_queue(
    job_world: JobWorldFactory, postgres: PostgresCluster, open_tmp: Path
) -> None:
    url = postgres.create_database()
    shared = open_tmp / "shared-data"
    shared.mkdir()
    settings = {"DATABASE_URL": url, "MAX_CONCURRENT_JOBS": "2"}
    first: JobWorld = job_world(data_dir=shared, **settings)
    second: JobWorld = job_world(data_dir=shared, **settings)
    member = first.member()
    other_door = Api(second.server, member.user)
    second.apis.append(other_door)

    jobs = []
    for i in range(6):
        door = member if i % 2 else other_door
        jobs.append((door, door.run(member.repo, f"Nap {i} {marker(NAP)}")["jobId"]))
    done = [door.wait_ended(job_id, 300) for door, job_id in jobs]

    assert {job["status"] for job in done} == {"completed"}
    assert most_at_once(intervals(done)) == 2


def test_a_lease_of_another_host_names_no_process_here() -> None:
    """Servers on several hosts share the database: a dead one's pid means nothing here, so
    recovering its job kills no local process that happens to have that number."""
    assert owner_is_here(new_owner_id())
    assert owner_is_here(None)
    assert not owner_is_here(f"not-{socket.gethostname()}:{os.getpid()}:0123abcd")
    assert not owner_is_dead(f"not-{socket.gethostname()}:999999999:0123abcd")

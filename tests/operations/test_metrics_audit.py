"""GET /metrics after a few jobs, and the audit trail of job and repository operations."""

from __future__ import annotations

import re

from tests.fake_anthropic import marker
from tests.fake_anthropic.images import tiny_png
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import Api
from tests.support.users import UserFactory


def sample(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name}{labels} not in metrics"
    return float(match.group(1))


def test_metrics_count_jobs_and_logins(job_world: JobWorldFactory) -> None:
    world = job_world()
    alice = world.member()
    with world.server.client() as anonymous:
        anonymous.post("/auth/login", json={"username": alice.user.name, "password": "wrong"})
    jobs = [alice.run(alice.repo, f"Hi {i} {marker('hello')}")["jobId"] for i in range(3)]
    failing = alice.run(alice.repo, f"Fail {marker('bad-request')}")["jobId"]
    for job_id in [*jobs, failing]:
        alice.wait_ended(job_id)
    waiting = alice.create_job(alice.repo, "never started")["jobId"]

    with world.server.client() as anonymous:
        response = anonymous.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, "cbs_job_outcomes_total", '{status="completed"}') == 3
    assert sample(text, "cbs_job_outcomes_total", '{status="failed"}') == 1
    assert sample(text, "cbs_job_duration_seconds_count", '{status="completed"}') == 3
    assert sample(text, "cbs_workspace_create_seconds_count", '{strategy="copy"}') == 4
    assert sample(text, "cbs_logins_total", '{outcome="success"}') >= 1
    assert sample(text, "cbs_logins_total", '{outcome="failed"}') == 1
    assert sample(text, "cbs_queue_depth") == 0
    assert sample(text, "cbs_running_jobs_total") == 0
    assert waiting


def test_audit_trail_of_operations(job_world: JobWorldFactory, users: UserFactory) -> None:
    admins = users.group()
    world = job_world(ADMIN_GROUP=admins)
    alice = world.member()
    job_id = alice.create_job(alice.repo, f"Hi {marker('hello')}")["jobId"]
    alice.http.post(f"/jobs/{job_id}/images", files=[("file", ("a.png", tiny_png()))])
    alice.start(job_id)
    alice.wait_ended(job_id)
    alice.http.post(f"/jobs/{job_id}/resume", json={"prompt": "again"})
    alice.wait_ended(job_id)
    alice.http.post(f"/jobs/{job_id}/cancel")  # ended: refused with 409
    alice.http.post(f"/repositories/{alice.repo}/pull")
    alice.http.delete(f"/jobs/{job_id}")

    admin = Api(world.server, users.create(groups=(admins,)))
    world.apis.append(admin)
    trail = admin.http.get("/audit", params={"user": alice.user.name}).json()
    actions = [(entry["action"], entry["outcome"]) for entry in reversed(trail)]
    assert actions == [
        ("login", "success"),
        ("repository.register", "success"),
        ("job.create", "success"),
        ("job.upload", "success"),
        ("job.start", "success"),
        ("job.resume", "success"),
        ("job.cancel", "conflict"),
        ("repository.pull", "success"),
        ("job.delete", "success"),
    ]
    assert {entry["address"] for entry in trail} == {"127.0.0.1"}
    assert trail[0]["target"] == job_id
    repository = f"{alice.user.name}/{alice.repo}"  # names are per owner: both are told
    assert [e["target"] for e in trail if e["action"].startswith("repository.")] == [
        repository,
        repository,
    ]
    limited = admin.http.get("/audit", params={"limit": 2}).json()
    assert len(limited) == 2 and limited[0]["time"] >= limited[1]["time"]
    assert admin.http.get("/audit", params={"since": "2999-01-01T00:00:00Z"}).json() == []

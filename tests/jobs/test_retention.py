"""Finished jobs' workspaces go after JOB_RETENTION_DAYS; the job's record stays."""

from __future__ import annotations

from tests.fake_anthropic import marker
from tests.jobs.conftest import JobWorldFactory
from tests.support.server import wait_for


def test_retention_removes_old_workspaces(job_world: JobWorldFactory) -> None:
    world = job_world(JOB_RETENTION_DAYS="0")
    alice = world.member()
    job_id = alice.run(alice.repo, f"Write {marker('write-file')}")["jobId"]
    assert alice.wait_ended(job_id)["status"] == "completed"
    workspace = world.server.data_dir / "workspaces" / job_id

    world.server.restart()  # a sweep runs at every start, then hourly

    wait_for(lambda: not workspace.exists(), 30, "the workspace to be removed")
    job = alice.job(job_id)
    assert job["status"] == "completed" and job["output"] == "I wrote hello.txt."
    assert alice.http.get(f"/jobs/{job_id}/files").status_code == 404
    resumed = alice.http.post(f"/jobs/{job_id}/resume", json={"prompt": "more"})
    assert resumed.status_code == 409
    assert "removed" in resumed.json()["detail"]


def test_unfinished_jobs_keep_their_workspace(job_world: JobWorldFactory) -> None:
    world = job_world(JOB_RETENTION_DAYS="7")
    alice = world.member()
    job_id = alice.run(alice.repo, f"Write {marker('write-file')}")["jobId"]
    alice.wait_ended(job_id)
    world.server.restart()
    assert alice.http.get(f"/jobs/{job_id}/files").status_code == 200

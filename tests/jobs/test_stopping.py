"""Timeouts, cancels, deletes and crashes: the job ends as it should and no process of it
is left, not even the ones Claude Code's Bash tool starts in sessions of their own."""

from __future__ import annotations

import re

from tests.fake_anthropic import FakeAnthropic, Hang, bash, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import Api
from tests.support.server import wait_for
from tests.support.users import running_processes

SLEEPER = "sleeper"


def processes_of(api: Api) -> list[str]:
    return running_processes(api.user.name)


def sleeping(api: Api) -> bool:
    return any("sleep 1000" in line for line in processes_of(api))


def test_timeout_stops_every_process(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script(SLEEPER, [bash("sleep 1000"), text("Slept.")])
    alice = job_world().member()
    job = alice.run(alice.repo, f"Sleep {marker(SLEEPER)}", options={"timeout": 8})
    wait_for(lambda: sleeping(alice), 60, "the agent's sleep to start")

    done = alice.wait_ended(job["jobId"])

    assert done["status"] == "timeout"
    assert "timed out after 8 s" in done["error"]
    assert processes_of(alice) == []


def test_cancel_a_running_job(job_world: JobWorldFactory, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.add_script(SLEEPER, [bash("sleep 1000"), text("Slept.")])
    alice = job_world().member()
    job = alice.run(alice.repo, f"Sleep {marker(SLEEPER)}")
    wait_for(lambda: sleeping(alice), 60, "the agent's sleep to start")

    response = alice.http.post(f"/jobs/{job['jobId']}/cancel")
    assert response.status_code == 202

    done = alice.wait_ended(job["jobId"], deadline=30)
    assert done["status"] == "cancelled"
    assert processes_of(alice) == []


def test_cancel_a_queued_job_at_once(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script("hang-forever", [Hang()])
    alice = job_world(MAX_CONCURRENT_JOBS="1").member()
    running = alice.run(alice.repo, f"Hang {marker('hang-forever')}")
    alice.wait_status(running["jobId"], {"running"})
    queued = alice.run(alice.repo, "Wait your turn")
    assert alice.job(queued["jobId"])["queuePosition"] == 1

    response = alice.http.post(f"/jobs/{queued['jobId']}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert alice.http.post(f"/jobs/{running['jobId']}/cancel").status_code == 202
    assert alice.wait_ended(running["jobId"])["status"] == "cancelled"


def test_delete_a_running_job(job_world: JobWorldFactory, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.add_script(SLEEPER, [bash("sleep 1000"), text("Slept.")])
    world = job_world()
    alice = world.member()
    job = alice.run(alice.repo, f"Sleep {marker(SLEEPER)}")
    wait_for(lambda: sleeping(alice), 60, "the agent's sleep to start")

    assert alice.http.delete(f"/jobs/{job['jobId']}").status_code == 204

    assert alice.http.get(f"/jobs/{job['jobId']}").status_code == 404
    assert not (world.server.data_dir / "workspaces" / job["jobId"]).exists()
    assert processes_of(alice) == []


def test_a_killed_server_loses_no_job(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script(SLEEPER, [bash("sleep 1000"), text("Slept.")])
    world = job_world(MAX_CONCURRENT_JOBS="1")
    alice = world.member()
    running = alice.run(alice.repo, f"Sleep {marker(SLEEPER)}")
    waiting = alice.run(alice.repo, f"Then me {marker('hello')}")
    wait_for(lambda: sleeping(alice), 60, "the agent's sleep to start")

    world.server.kill()
    world.server.start()

    ended = alice.wait_ended(running["jobId"], deadline=60)
    assert ended["status"] == "failed"
    assert "server stopped" in ended["error"]
    assert alice.wait_ended(waiting["jobId"])["status"] == "completed"
    wait_for(lambda: processes_of(alice) == [], 30, "no process of the user")
    # the run the new server ended counts, from its claim by the dead one
    with world.server.client() as anonymous:
        metrics = anonymous.get("/metrics").text
    failed = r'^cbs_job_duration_seconds_(count|sum)\{status="failed"\} ([0-9.e+-]+)$'
    counted = dict(re.findall(failed, metrics, re.MULTILINE))
    assert float(counted["count"]) == 1 and float(counted["sum"]) > 0, counted


def test_a_repository_with_a_running_or_queued_job_is_not_removed(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script("hang-forever", [Hang()])
    alice = job_world(MAX_CONCURRENT_JOBS="1").member()
    running = alice.run(alice.repo, f"Hang {marker('hang-forever')}")
    alice.wait_status(running["jobId"], {"running"})
    queued = alice.run(alice.repo, "Wait your turn")

    refused = alice.http.delete(f"/repositories/{alice.repo}")
    assert refused.status_code == 409
    assert "2 queued or running jobs" in refused.json()["detail"]

    assert alice.http.post(f"/jobs/{queued['jobId']}/cancel").status_code == 202
    assert alice.http.post(f"/jobs/{running['jobId']}/cancel").status_code == 202
    assert alice.wait_ended(running["jobId"])["status"] == "cancelled"
    assert alice.http.delete(f"/repositories/{alice.repo}").status_code == 204
    assert alice.http.get(f"/repositories/{alice.repo}").status_code == 404

"""EXECUTOR=slurm (issue 19): each job runs as a Slurm job step, started with srun as its
user; cancel, timeout, a memory limit, a refused request and a server crash end it in Slurm
and mark it as they should."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from claude_batch_server.jobs.reaper import descendants
from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.jobs.test_containment import HOG_COMMAND, processes_of, running
from tests.support.api import Api, home_of
from tests.support.server import wait_for
from tests.support.slurm import SlurmCluster, running_cluster
from tests.support.users import UserFactory

SLURM_ID = "slurm-id"
SLEEPER = "slurm-sleeper"
HOG = "slurm-hog"


def slurm_jobs_of(slurm: SlurmCluster, job_id: str) -> list[str]:
    """The job's Slurm jobs still queued or running."""
    return [line for line in slurm.jobs() if line.split()[1] == f"cbs-{job_id}"]


def sleeping(api: Api) -> bool:
    return running(api, "sleep 1000")


def test_a_job_runs_as_a_slurm_step_of_its_user(
    slurm_world: JobWorldFactory,
    slurm: SlurmCluster,
    fake_anthropic: FakeAnthropic,
    users: UserFactory,
) -> None:
    # the Bash tool writes what Slurm told the step, and keeps it running a moment to be seen
    script = 'echo "$SLURM_JOB_ID $SLURM_JOB_NAME $USER $HOME" > slurm.txt; sleep 3'
    fake_anthropic.add_script(SLURM_ID, [bash(script), text("Noted.")])
    admins = users.group()
    world = slurm_world(COW_STRATEGY="auto", ADMIN_GROUP=admins)
    alice = world.member()
    health = alice.http.get("/health")
    assert health.status_code == 200 and health.json()["checks"]["cluster"] == "ok"
    admin = Api(world.server, users.create(groups=(admins,)))
    world.apis.append(admin)
    storage = admin.http.get("/system/storage").json()
    # the nodes see DATA_DIR's folders, not this host's mounts: never an overlay
    assert storage["executor"] == "slurm" and storage["strategy"] in {"btrfs", "reflink", "copy"}

    job = alice.run(alice.repo, f"Note the step {marker(SLURM_ID)}")
    ended = alice.wait_ended(job["jobId"])

    assert ended["status"] == "completed", ended["error"]
    assert ended["output"] == "Noted."
    seen = alice.http.get(f"/jobs/{job['jobId']}/files/content", params={"path": "slurm.txt"})
    slurm_id, name, user, home = seen.json()["content"].split()
    assert name == f"cbs-{job['jobId']}"
    assert (user, home) == (alice.user.name, str(home_of(alice.user)))
    done = slurm.run("squeue", "-h", "--states=all", "-j", slurm_id, "-o", "%j %u %T")
    assert done.split() == [f"cbs-{job['jobId']}", alice.user.name, "COMPLETED"]
    assert ended["resources"]["memoryPeakBytes"] > 0  # sstat, while the step ran
    assert "slurm.txt" in alice.http.get(f"/jobs/{job['jobId']}/diff").text
    assert processes_of(alice.user.uid) == []


@pytest.mark.parametrize("stop", ["cancel", "delete"])
def test_cancel_and_delete_end_the_slurm_job(
    stop: str, slurm_world: JobWorldFactory, slurm: SlurmCluster, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script(SLEEPER, [bash("sleep 1000"), text("Slept.")])
    alice = slurm_world().member()
    job = alice.run(alice.repo, f"Sleep {marker(SLEEPER)}")
    wait_for(lambda: sleeping(alice), 60, "the agent's sleep to start")
    assert len(slurm_jobs_of(slurm, job["jobId"])) == 1

    if stop == "cancel":
        assert alice.http.post(f"/jobs/{job['jobId']}/cancel").status_code == 202
        assert alice.wait_ended(job["jobId"], deadline=30)["status"] == "cancelled"
    else:  # answered at once: the job is forgotten, its end follows
        assert alice.http.delete(f"/jobs/{job['jobId']}").status_code == 204
        assert alice.http.get(f"/jobs/{job['jobId']}").status_code == 404

    wait_for(lambda: slurm_jobs_of(slurm, job["jobId"]) == [], 30, "the Slurm job to end")
    wait_for(lambda: processes_of(alice.user.uid) == [], 30, "the agent's processes to end")


def test_the_timeout_ends_the_slurm_job(
    slurm_world: JobWorldFactory, slurm: SlurmCluster, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script(SLEEPER, [bash("sleep 1000"), text("Slept.")])
    alice = slurm_world().member()
    job = alice.run(alice.repo, f"Sleep {marker(SLEEPER)}", options={"timeout": 8})

    ended = alice.wait_ended(job["jobId"])

    assert ended["status"] == "timeout"
    assert "timed out after 8 s" in ended["error"]
    assert slurm_jobs_of(slurm, job["jobId"]) == []
    assert processes_of(alice.user.uid) == []


def test_the_memory_limit_is_slurms(
    slurm_world: JobWorldFactory, slurm: SlurmCluster, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script(HOG, [bash(HOG_COMMAND), text("Done.")])
    alice = slurm_world(JOB_MEMORY_MAX="600M").member()
    job = alice.run(alice.repo, f"Hog {marker(HOG)}")

    ended = alice.wait_ended(job["jobId"])

    assert ended["status"] == "failed"
    assert "JOB_MEMORY_MAX" in ended["error"] and "600 MiB" in ended["error"]
    assert slurm_jobs_of(slurm, job["jobId"]) == []
    assert processes_of(alice.user.uid) == []


def test_a_request_the_cluster_refuses_fails_at_once(
    slurm_world: JobWorldFactory, slurm: SlurmCluster
) -> None:
    too_much = f"{slurm.memory_mb + 1024}M"  # more than the only node has
    alice = slurm_world(JOB_MEMORY_MAX=too_much).member()
    job = alice.run(alice.repo, "Never runs")

    ended = alice.wait_ended(job["jobId"], deadline=60)

    assert ended["status"] == "failed"
    assert ended["error"].startswith("Slurm refused the job: ")
    assert "Requested node configuration is not available" in ended["error"]
    assert slurm_jobs_of(slurm, job["jobId"]) == []


def test_a_job_pending_in_slurm_ends_at_its_timeout_saying_why(
    slurm_world: JobWorldFactory, slurm: SlurmCluster, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script(SLEEPER, [bash("sleep 1000"), text("Slept.")])
    most = f"{slurm.memory_mb * 6 // 10}M"  # the node holds one such job at a time
    alice = slurm_world(JOB_MEMORY_MAX=most).member()
    first = alice.run(alice.repo, f"Sleep {marker(SLEEPER)}")
    wait_for(lambda: sleeping(alice), 60, "the agent's sleep to start")

    waiting = alice.run(alice.repo, "Wait for the node", options={"timeout": 8})
    ended = alice.wait_ended(waiting["jobId"])

    assert ended["status"] == "timeout"
    assert ended["error"] == "timed out after 8 s, still pending in Slurm (Resources)"
    assert slurm_jobs_of(slurm, waiting["jobId"]) == []
    assert alice.http.post(f"/jobs/{first['jobId']}/cancel").status_code == 202
    assert alice.wait_ended(first["jobId"])["status"] == "cancelled"


def test_a_crashed_servers_slurm_job_is_ended_at_restart(
    slurm_world: JobWorldFactory, slurm: SlurmCluster, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script(SLEEPER, [bash("sleep 1000"), text("Slept.")])
    world = slurm_world()
    alice = world.member()
    job = alice.run(alice.repo, f"Sleep {marker(SLEEPER)}")
    wait_for(lambda: sleeping(alice), 60, "the agent's sleep to start")

    # the whole unit dies with every root process of the server, srun with it: only the
    # Slurm job is left, which runs on (killing srun does not end it)
    assert world.server.process is not None
    local = descendants(world.server.process.pid)  # the spawner, the reapers, srun
    for pid in local:
        os.kill(pid, signal.SIGSTOP)
    world.server.kill()
    for pid in local:
        os.kill(pid, signal.SIGKILL)
    assert len(slurm_jobs_of(slurm, job["jobId"])) == 1
    assert sleeping(alice)

    world.server.start()
    ended = alice.wait_ended(job["jobId"], deadline=60)
    assert ended["status"] == "failed" and "server stopped" in ended["error"]
    assert slurm_jobs_of(slurm, job["jobId"]) == []
    wait_for(lambda: processes_of(alice.user.uid) == [], 30, "no process of the user")


def test_a_lost_node_fails_the_job_saying_so(
    job_world: JobWorldFactory,
    slurm: SlurmCluster,  # skips the test where Slurm is not installed
    fake_anthropic: FakeAnthropic,
) -> None:
    # a cluster of its own, whose controller gives a silent node up after 4 s
    with running_cluster("SlurmdTimeout=4\n") as lossy:
        fake_anthropic.add_script(SLEEPER, [bash("sleep 1000"), text("Slept.")])
        alice = job_world(**lossy.env, EXECUTOR="slurm", JOB_MEMORY_MAX="2G").member()
        job = alice.run(alice.repo, f"Sleep {marker(SLEEPER)}")
        wait_for(lambda: sleeping(alice), 60, "the agent's sleep to start")

        lossy.pause_node()
        ended = alice.wait_ended(job["jobId"], deadline=60)
        lossy.pause_node(paused=False)

        assert ended["status"] == "failed"
        assert ended["error"] == "the Slurm node it ran on failed (NodeDown)"
        # the node, back, ends what was left of the step
        wait_for(lambda: processes_of(alice.user.uid) == [], 60, "no process of the user")


def test_health_fails_without_the_cluster(
    slurm_world: JobWorldFactory, slurm: SlurmCluster, tmp_path: Path
) -> None:
    unreachable = slurm.unreachable_conf(tmp_path / "etc")
    world = slurm_world(SLURM_CONF=str(unreachable))
    response = httpx.get(f"{world.server.url}/health", timeout=60)
    assert response.status_code == 503
    cluster = response.json()["checks"]["cluster"]
    assert cluster.startswith("failing: sinfo") and "Unable to contact slurm controller" in cluster

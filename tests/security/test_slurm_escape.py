"""A job run by the Slurm executor against the limits its local run has from its first
process: its step is slurmstepd's child on the node, not srun's."""

from __future__ import annotations

import subprocess

import pytest

from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.jobs.test_quota import QuotaFs, quota_fs
from tests.security.conftest import Attacks
from tests.security.test_quota_escape import NESTED, escape, quota_world
from tests.slurm.conftest import slurm
from tests.support.server import wait_for
from tests.support.slurm import SlurmCluster
from tests.support.users import UserFactory

__all__ = ["quota_fs", "slurm"]


@pytest.mark.xfail(
    strict=True,
    reason="jobs/seccomp.py's filter is installed in srun's process (the spawner's child);"
    " the step runs as slurmstepd's child on the node, without it",
)
def test_a_slurm_step_cannot_make_a_subvolume_either(
    job_world: JobWorldFactory,
    fake_anthropic: FakeAnthropic,
    quota_fs: QuotaFs,
    slurm: SlurmCluster,
    attacks: Attacks,
) -> None:
    if quota_fs.mechanism != "btrfs-qgroup":
        pytest.skip("subvolumes are btrfs's")
    world = quota_world(
        job_world,
        quota_fs,
        **slurm.env,
        EXECUTOR="slurm",
        SLURM_PARTITION="batch",
        JOB_MEMORY_MAX="2G",
    )
    script = f"grep Seccomp: /proc/self/status; {NESTED}"
    transcript = escape(world, fake_anthropic, "nested", script)
    attacks.tried()
    assert "made=1" in transcript, transcript[-3000:]  # no subvolume of its own
    assert "head=1" in transcript, transcript[-3000:]  # so no write past the limit


def test_a_users_slurm_job_named_with_a_newline_does_not_stop_the_server(
    job_world: JobWorldFactory, slurm: SlurmCluster, attacks: Attacks
) -> None:
    """Any user of the cluster may name a job, or comment it, with newlines and "|": its
    squeue line is then several, which the server must not take for jobs of its own, nor
    fail on (it asks squeue for its dead runs at every start)."""
    world = job_world(**slurm.env, EXECUTOR="slurm", SLURM_PARTITION="batch", JOB_MEMORY_MAX="2G")
    alice = world.member()
    conf = f"SLURM_CONF={slurm.env['SLURM_CONF']}"
    named = ["--job-name=x\ny", "--comment=c\nRUNNING|root|t|cbs-0"]
    srun = subprocess.Popen(
        [
            "runuser",
            "-u",
            alice.user.name,
            "--",
            "env",
            conf,
            "srun",
            "--quiet",
            *named,
            "sleep",
            "600",
        ],
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: alice.user.name in slurm.run("squeue", "-h", "-t", "R", "-o", "%u"),
            30,
            "alice's Slurm job",
        )
        attacks.tried()
        world.server.restart()  # fails unless the server starts and answers
        assert alice.http.get("/auth/me").status_code == 200
    finally:
        srun.kill()
        srun.wait()
        slurm.run("scancel", f"--user={alice.user.name}")


def as_user(user: str, slurm: SlurmCluster, *argv: str) -> subprocess.Popen[bytes]:
    """A Slurm command of `user`'s own, outside the server."""
    conf = f"SLURM_CONF={slurm.env['SLURM_CONF']}"
    return subprocess.Popen(
        ["runuser", "-u", user, "--", "env", conf, *argv],
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def slurm_ids(slurm: SlurmCluster, user: str) -> list[int]:
    return [int(line) for line in slurm.run("squeue", "-h", "-u", user, "-o", "%i").split()]


def test_a_forged_squeue_line_does_not_cancel_another_users_slurm_job(
    job_world: JobWorldFactory,
    fake_anthropic: FakeAnthropic,
    users: UserFactory,
    slurm: SlurmCluster,
    attacks: Attacks,
) -> None:
    """alice comments a Slurm job of her own, named as her server job's, with a second line
    in squeue's format naming bob's Slurm job (squeue shows every user's). Cancelling her
    server job must end hers only, not bob's."""
    fake_anthropic.add_script("sleeper", [bash("sleep 1000"), text("Slept.")])
    world = job_world(**slurm.env, EXECUTOR="slurm", SLURM_PARTITION="batch", JOB_MEMORY_MAX="1G")
    alice, bob = world.member(), users.create()
    job = alice.run(alice.repo, f"Sleep {marker('sleeper')}")["jobId"]
    name = f"--name=cbs-{job}"
    wait_for(lambda: slurm.run("squeue", "-h", "-t", "R", name, "-o", "%k").strip(), 60, "srun")
    tag = slurm.run("squeue", "-h", name, "-o", "%k").strip()
    started = [
        as_user(
            alice.user.name,
            slurm,
            "srun",
            "--quiet",
            f"--job-name=cbs-{job}",
            "--mem=64M",
            "sleep",
            "600",
        )
    ]
    try:
        holder = wait_for(
            lambda: (
                max(slurm_ids(slurm, alice.user.name), default=0) > 0
                and [
                    i
                    for i in slurm_ids(slurm, alice.user.name)
                    if f"cbs-{job}" in slurm.run("squeue", "-h", "-j", str(i), "-o", "%j")
                ][-1]
            ),
            30,
            "alice's own job",
        )
        started.append(as_user(bob.name, slurm, "srun", "--quiet", "--mem=64M", "sleep", "600"))
        bobs = wait_for(lambda: slurm_ids(slurm, bob.name), 30, "bob's job")
        forged = f"{tag}\n{bobs[0]}|RUNNING|None|{tag}"
        update = as_user(
            alice.user.name, slurm, "scontrol", "update", f"JobId={holder}", f"Comment={forged}"
        )
        assert update.wait() == 0
        attacks.tried()
        assert alice.http.post(f"/jobs/{job}/cancel").status_code == 202
        alice.wait_ended(job, deadline=180)
        assert slurm_ids(slurm, bob.name) == bobs  # bob's job runs on
    finally:
        for process in started:
            process.kill()
            process.wait()
        for user in (alice.user.name, bob.name):
            slurm.run("scancel", f"--user={user}", check=False)

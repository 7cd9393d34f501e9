"""Where the cluster keeps accounting (issue 19, item 3), a run's final resources are the
ones Slurm recorded for its job; without it, sstat's readings (test_slurm_jobs.py)."""

from __future__ import annotations

import pytest

from claude_batch_server.jobs.executors.slurm import Request, Slurm, _bytes, _cpu_seconds
from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.jobs.test_containment import BURN_COMMAND
from tests.support.slurm import SlurmCluster

BURN = "slurm-burn"


def test_the_resources_are_slurms_accounting(
    accounting_world: JobWorldFactory,
    slurm_accounting: SlurmCluster,
    fake_anthropic: FakeAnthropic,
) -> None:
    # the step notes its Slurm job's id, then burns 2 s of CPU time
    script = f'echo "$SLURM_JOB_ID" > slurm.txt; {BURN_COMMAND}'
    fake_anthropic.add_script(BURN, [bash(script), text("Burnt.")])
    alice = accounting_world().member()

    job = alice.run(alice.repo, f"Burn {marker(BURN)}")
    ended = alice.wait_ended(job["jobId"])

    assert ended["status"] == "completed", ended["error"]
    seen = alice.http.get(f"/jobs/{job['jobId']}/files/content", params={"path": "slurm.txt"})
    slurm_id = seen.json()["content"].strip()
    out = slurm_accounting.run(
        "sacct", "-n", "-P", "--noconvert", "-j", slurm_id, "-o", "JobID,State,TotalCPU,MaxRSS"
    )
    steps = [line.split("|") for line in out.splitlines() if line.startswith(f"{slurm_id}.")]
    assert steps and all(state == "COMPLETED" for _, state, _, _ in steps)
    # what sacct says of the job's steps, to the millisecond (sstat tells whole seconds)
    cpu = sum(_cpu_seconds(total) for _, _, total, _ in steps)
    peak = max(_bytes(rss) for _, _, _, rss in steps)
    assert cpu >= 1.5
    assert ended["resources"]["cpuSeconds"] == pytest.approx(cpu, abs=1e-6)
    assert ended["resources"]["memoryPeakBytes"] == peak > 0


def test_accounting_is_told_from_its_absence(
    slurm: SlurmCluster, slurm_accounting: SlurmCluster
) -> None:
    assert Slurm(Request(), "tag", slurm_accounting.env).accounting
    plain = Slurm(Request(), "tag", slurm.env)
    assert not plain.accounting
    assert plain.accounted(1, wait=60.0) is None  # at once: sstat's readings stay

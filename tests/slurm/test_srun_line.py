"""The srun line of a run: the settings' limits as Slurm's options, nothing of the user's in
it, and Slurm's refusal read from srun's standard error."""

from __future__ import annotations

from pathlib import Path

from claude_batch_server.jobs.executors.slurm import Request, Slurm, refusal
from tests.support.slurm import SlurmCluster


def test_the_settings_become_srun_options(slurm: SlurmCluster) -> None:
    request = Request(1536 * 2**20 + 1, 1.5, "batch", ("--account=team",))
    line = Slurm(request, "claude-batch-0123", slurm.env).command(
        "abc", Path("/data/workspaces/abc"), 61, ["claude", "-p"]
    )
    assert line[0].endswith("/srun")
    options = line[1 : line.index("--")]
    assert {
        "--job-name=cbs-abc",
        "--comment=claude-batch-0123",
        "--chdir=/data/workspaces/abc",
        "--export=ALL",
        "--unbuffered",
        "--mem=1537M",  # rounded up: never less than JOB_MEMORY_MAX
        "--cpus-per-task=2",
        "--time=2",  # 61 s, in whole minutes
        "--partition=batch",
    } <= set(options)
    assert options[-1] == "--account=team"  # SLURM_ARGS last: they may add, not hide
    assert line[line.index("--") + 1 :] == ["claude", "-p"]


def test_no_limit_leaves_the_clusters_defaults(slurm: SlurmCluster) -> None:
    line = Slurm(Request(), "tag", slurm.env).command("abc", Path("/w"), 3600, ["claude"])
    assert not [option for option in line if option.startswith(("--mem", "--cpus", "--part"))]
    assert "--time=60" in line


def test_a_refusal_is_read_from_srun() -> None:
    said = [
        "srun: error: Memory specification can not be satisfied",
        "srun: error: Unable to allocate resources: Requested node configuration is not available",
    ]
    assert refusal(said) == "Requested node configuration is not available"
    assert refusal(["srun: error: cbs1: task 0: Out Of Memory"]) is None

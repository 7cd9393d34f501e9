"""EXECUTOR=slurm at start: what cannot work with Slurm stops the start with one line naming
it (an overlay mount lives on one host; the sandbox confines this host's processes; srun
options the server sets itself)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from claude_batch_server.settings import Settings
from tests.support.server import SERVER_BIN
from tests.support.slurm import SlurmCluster


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"COW_STRATEGY": "overlay"}, "COW_STRATEGY=overlay with EXECUTOR=slurm"),
        ({"JOB_SANDBOX": "on"}, "JOB_SANDBOX=on with EXECUTOR=slurm"),
        ({"SLURM_ARGS": "--job-name=mine"}, "SLURM_ARGS: --job-name is set by the server"),
        ({"SLURM_ARGS": "-Dsomewhere"}, "SLURM_ARGS: -D is set by the server"),
        ({"SLURM_ARGS": "-- sh -c evil"}, "SLURM_ARGS: -- ends srun's options"),
        ({"SLURM_ARGS": "--comment 'open"}, "SLURM_ARGS: not a shell-quoted list"),
        ({"SLURM_PARTITION": "a b"}, "SLURM_PARTITION"),
    ],
)
def test_what_slurm_cannot_do_stops_the_start(
    settings: dict[str, str], named: str, slurm: SlurmCluster, tmp_path: Path
) -> None:
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(tmp_path), "EXECUTOR": "slurm"}
    result = subprocess.run(
        [str(SERVER_BIN), "serve"],
        env=env | slurm.env | settings,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert named in result.stderr


def test_srun_arguments_are_split_as_a_shell_would(
    slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_ARGS", "--account=team --comment 'two words' --gres=gpu:1")
    assert Settings().slurm_args == ["--account=team", "--comment", "two words", "--gres=gpu:1"]

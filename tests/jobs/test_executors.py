"""EXECUTOR picks the executor in one place; a choice this build cannot serve stops the
start with a clear error, never a server that takes jobs it cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from claude_batch_server.cgroups.base import Limits
from claude_batch_server.jobs.containment import Containment
from claude_batch_server.jobs.executors import executor_for
from claude_batch_server.jobs.sandbox import Sandbox
from claude_batch_server.settings import SandboxMode, Settings
from tests.support.slurm import missing_binaries


def _executor_for(executor: str, tmp_path: Path) -> object:
    settings = Settings(EXECUTOR=executor, DATA_DIR=tmp_path)
    return executor_for(settings, Containment(None, Limits()), Sandbox(SandboxMode.OFF, tmp_path))


def test_local_is_the_default(tmp_path: Path) -> None:
    assert Settings(DATA_DIR=tmp_path).EXECUTOR == "local"
    assert getattr(_executor_for("local", tmp_path), "name", None) == "local"


def test_slurm_is_chosen_by_executor(tmp_path: Path) -> None:
    if missing_binaries():
        pytest.skip("Slurm is not installed: scripts/bootstrap-system.sh test installs it")
    assert getattr(_executor_for("slurm", tmp_path), "name", None) == "slurm"

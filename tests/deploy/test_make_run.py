"""`make run` from a clone that no job's user can reach (in a folder of root's alone): the
Claude Code CLI it installs is still theirs to run, and a job runs end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_JWT_KEY
from tests.fake_anthropic import marker
from tests.fake_anthropic.server import FakeAnthropic
from tests.jobs.conftest import agent_env
from tests.support.api import Api, home_of, make_git_repo
from tests.support.server import REPO_ROOT, LiveServer
from tests.support.users import UserFactory

MAKE_RUN_DEADLINE = 300.0  # a fresh .venv (pip) and the CLI from npm's cache


@pytest.fixture
def private_clone() -> Iterator[Path]:
    """A clone of this repository's HEAD in a folder of root's alone."""
    folder = Path(tempfile.mkdtemp(prefix="cbs-clone-", dir="/var/tmp"))
    folder.chmod(0o700)
    clone = folder / "claude-batch-server"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    yield clone
    shutil.rmtree(folder, ignore_errors=True)


def test_make_run_from_a_private_clone_runs_jobs(
    private_clone: Path, open_tmp: Path, users: UserFactory, fake_anthropic: FakeAnthropic
) -> None:
    env = {
        key: value for key, value in agent_env(fake_anthropic).items() if key != "CLAUDE_COMMAND"
    }
    env.update(
        AGENT_DIR=str(open_tmp / "agent"),  # a fresh install, not the suite's own CLI
        npm_config_offline="true",  # from npm's cache, which `make agent` filled: no network
        JWT_KEY=TEST_JWT_KEY,
        COW_STRATEGY="copy",
        HOME="/root",
    )
    data_dir = open_tmp / "data"
    data_dir.mkdir()
    server = LiveServer(
        data_dir,
        env,
        command=["make", "--no-print-directory", "run"],
        cwd=private_clone,
        start_deadline=MAKE_RUN_DEADLINE,
    )
    del server.env["CLAUDE_COMMAND"]  # none given: `make run` installs the CLI
    try:
        server.start()
        with server.client() as client:
            assert client.get("/health").json()["checks"]["agent"] == "ok"
        assert "jobs cannot run the agent" not in server.log()

        alice = Api(server, users.create())
        try:
            source = make_git_repo(home_of(alice.user), alice.user)
            alice.ready_repository("demo", source)
            job = alice.run("demo", f"Write hello.txt {marker('write-file')}")
            done = alice.wait_ended(job["jobId"])
            assert done["status"] == "completed", (done, alice.events(job["jobId"])[-3:])
            assert done["output"] == "I wrote hello.txt."
            assert "+hello world" in alice.http.get(f"/jobs/{job['jobId']}/diff").text
        finally:
            alice.close()
    finally:
        server.stop()


def test_the_agent_install_is_everyones_whatever_the_umask(
    private_clone: Path, open_tmp: Path
) -> None:
    agent_dir = open_tmp / "agent"
    subprocess.run(
        ["sh", "-c", f"umask 077 && make --no-print-directory agent AGENT_DIR={agent_dir}"],
        cwd=private_clone,
        env={**os.environ, "npm_config_offline": "true"},
        check=True,
        capture_output=True,
    )
    claude = agent_dir / "node_modules" / ".bin" / "claude"
    nobody = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(claude), "-v"],
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert nobody.returncode == 0 and "Claude Code" in nobody.stdout, nobody.stderr
    for path in (agent_dir, *agent_dir.rglob("*")):  # a link's target is checked itself
        if not path.is_symlink():
            assert path.stat().st_uid == 0 and path.stat().st_mode & 0o022 == 0, path

"""The Landlock sandbox (JOB_SANDBOX): a real job, through the real CLI, writes its
workspace and its own TMPDIR, and nothing else of its user's."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from claude_batch_server.jobs import landlock
from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import home_of
from tests.support.users import UserFactory

pytestmark = pytest.mark.skipif(landlock.abi() < 1, reason="the kernel offers no Landlock")

# every attempt leaves its exit status in the workspace, where the test reads it
ATTEMPTS = "; ".join(
    [
        "echo pwned >> ~/.bashrc; echo bashrc=$? > report.txt",
        'echo "{}" > ~/.claude/settings.json; echo settings=$? >> report.txt',
        "git config --global user.name mallory; echo gitconfig=$? >> report.txt",
        "ln ~/.bashrc bashrc-link; echo hardlink=$? >> report.txt",
        'echo t > "$TMPDIR/t" && echo tmp=$? >> report.txt',
        "echo tmpdir=$TMPDIR >> report.txt",
    ]
)


def report(lines: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines.splitlines() if "=" in line)


def test_a_job_writes_its_workspace_and_tmp_only(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script("escape", [bash(ATTEMPTS), text("Tried everything.")])
    world = job_world()
    alice = world.member()
    bashrc = home_of(alice.user) / ".bashrc"
    before = bashrc.read_bytes() if bashrc.exists() else b""

    job = alice.run(alice.repo, f"Escape {marker('escape')}")
    done = alice.wait_ended(job["jobId"])

    assert done["status"] == "completed", done["error"]
    content = alice.http.get(f"/jobs/{job['jobId']}/files/content", params={"path": "report.txt"})
    found = report(content.json()["content"])
    refused = ("bashrc", "settings", "gitconfig", "hardlink")
    assert all(found[attempt] != "0" for attempt in refused), found
    assert found["tmp"] == "0"
    assert (bashrc.read_bytes() if bashrc.exists() else b"") == before
    assert not (home_of(alice.user) / ".claude" / "settings.json").exists()
    assert not (home_of(alice.user) / ".gitconfig").exists()
    # the run's own temporary folder, under DATA_DIR, is gone with the run
    tmpdir = found["tmpdir"]
    assert tmpdir.startswith(str(world.server.data_dir / "tmp"))
    assert not Path(tmpdir).exists()
    # Claude Code kept its transcript in the user's state, as without the sandbox
    projects = home_of(alice.user) / ".claude" / "projects"
    assert any(projects.rglob("*.jsonl"))


def test_restrict_writes_in_a_process_of_a_user(users: UserFactory) -> None:
    """The module alone, in a child that took a user's ids: writes beneath the allowed
    folder work, others fail with EACCES although the uid may write there."""
    user = users.create()
    gid = pwd.getpwnam(user.name).pw_gid
    home = home_of(user)
    allowed = home / "allowed"
    allowed.mkdir()
    os.chown(allowed, user.uid, gid)
    script = (
        "import os, sys\n"
        "from claude_batch_server.jobs import landlock\n"
        f"os.setgroups([]); os.setgid({gid}); os.setuid({user.uid})\n"
        f"landlock.restrict_writes([{str(allowed)!r}, '/dev/null'])\n"
        f"open({str(allowed / 'a')!r}, 'w').write('a')\n"
        f"os.rename({str(allowed / 'a')!r}, {str(allowed / 'b')!r})\n"
        "open('/dev/null', 'w').write('x')\n"
        "try:\n"
        f"    open({str(home / 'c')!r}, 'w')\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused"
    assert (allowed / "b").read_text() == "a" and not (home / "c").exists()

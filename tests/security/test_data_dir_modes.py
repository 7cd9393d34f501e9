"""Another local user walks DATA_DIR after a real job ran: every path in it (listed by root
and handed to them, as if they had guessed it) is tried, and nothing opens, neither a byte
of the database nor a listing of uploads, nor the job's workspace, images or transcript.
A DATA_DIR left world-readable by an older version is put right at start."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.fake_anthropic import marker
from tests.fake_anthropic.images import tiny_png
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.api import home_of
from tests.support.users import OsUser, UserFactory

# Run as the other user with the system's Python: for each path, whether it could be read
# (a file) or listed (a folder). A folder that only lets them pass (--x) is not "read".
PROBE = """
import json, os, sys
opened = []
for path in json.load(sys.stdin):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        continue
    try:
        if os.path.isdir(path):
            os.listdir(fd)
        else:
            os.read(fd, 1)
        opened.append(path)
    except OSError:
        pass
    finally:
        os.close(fd)
print(json.dumps(opened))
"""

# Folders that users must be able to pass through (never list) to reach their own.
PASS_THROUGH = {"", "workspaces", "staging"}


def every_path(root: Path) -> list[str]:
    """Every file and folder beneath `root` (root's view), `root` itself included."""
    found = [str(root)]
    for directory, folders, files in os.walk(root):
        found += [str(Path(directory, name)) for name in folders + files]
    return found


def opened_by(user: OsUser, paths: list[str]) -> list[str]:
    result = subprocess.run(
        ["runuser", "-u", user.name, "--", "/usr/bin/python3", "-c", PROBE],
        input=json.dumps(paths),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    opened: list[str] = json.loads(result.stdout)
    return opened


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_another_user_reads_nothing_in_data_dir(
    job_world: JobWorldFactory, users: UserFactory, attacks: Attacks
) -> None:
    world = job_world(JWT_KEY="")  # empty: the key is made and kept in DATA_DIR
    alice = world.member()
    job = alice.create_job(alice.repo, f"Write it {marker('write-file')}")["jobId"]
    png = ("file", ("secret.png", tiny_png(), "image/png"))
    assert alice.http.post(f"/jobs/{job}/images", files=[png]).status_code == 201
    alice.start(job)
    assert alice.wait_ended(job)["status"] == "completed"
    data_dir = world.server.data_dir
    assert (data_dir / "workspaces" / job / "hello.txt").exists()  # the job's own file
    mallory = users.create()

    paths = every_path(data_dir) + every_path(home_of(alice.user) / ".claude")
    assert {"server.db", "jwt.key", "uploads"} <= {path.name for path in data_dir.iterdir()}
    attacks.tried(len(paths))
    opened = opened_by(mallory, paths)
    allowed = {str(data_dir / name).rstrip("/") for name in PASS_THROUGH}
    assert [path for path in opened if path not in allowed] == [], "\n".join(opened)
    # the pass-through folders let them in, never show what is inside
    for name in PASS_THROUGH:
        assert mode(data_dir / name) & 0o077 == 0o011, name


def test_an_older_data_dir_is_put_right_at_start(
    job_world: JobWorldFactory, users: UserFactory, attacks: Attacks
) -> None:
    world = job_world(JWT_KEY="")
    alice = world.member()
    job = alice.create_job(alice.repo, "not started")["jobId"]
    png = ("file", ("old.png", tiny_png(), "image/png"))
    assert alice.http.post(f"/jobs/{job}/images", files=[png]).status_code == 201
    world.server.stop()
    data_dir = world.server.data_dir
    # what an older version left behind: everything readable by all
    for path in map(Path, every_path(data_dir)):
        if not path.is_symlink() and path.stat().st_uid == 0 and path.name != "workspaces":
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert mode(data_dir / "server.db") == 0o644
    mallory = users.create()
    assert opened_by(mallory, [str(data_dir / "server.db")]) == [str(data_dir / "server.db")]

    world.server.start()
    paths = every_path(data_dir)
    attacks.tried(len(paths))
    opened = opened_by(mallory, paths)
    allowed = {str(data_dir / name).rstrip("/") for name in PASS_THROUGH}
    assert [path for path in opened if path not in allowed] == [], "\n".join(opened)
    for name in ("server.db", "jwt.key"):
        assert mode(data_dir / name) == 0o600, name
    assert mode(data_dir / "uploads") == 0o700

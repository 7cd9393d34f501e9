"""The diff's search for large files runs as root over a workspace that its job keeps
changing: a folder swapped for a symlink halfway must never lead it elsewhere (names and
sizes of another user's large files would show in the diff)."""

from __future__ import annotations

import subprocess

from tests.fake_anthropic import marker
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.server import wait_for

# Swaps each folder `dN` with its symlink `lN` to the secret, atomically, for as long as it
# runs: many pairs, since the walk's window between checking and entering is microseconds.
PAIRS = 1000
SWAPPER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
os.chdir(sys.argv[1])
pairs = int(sys.argv[3])
for i in range(pairs):
    os.mkdir(f"d{i}")
    os.symlink(sys.argv[2], f"l{i}")
names = [(f"d{i}".encode(), f"l{i}".encode()) for i in range(pairs)]
open("ready", "w").close()
while True:
    for d, l in names:
        if libc.renameat2(AT_FDCWD, d, AT_FDCWD, l, RENAME_EXCHANGE) != 0:
            sys.exit(os.strerror(ctypes.get_errno()))
"""
SECRET_NAME = "bobs-hidden-report"
ATTEMPTS = 30  # on main about one diff in ten leaked the name here


def test_diff_never_walks_through_a_swapped_symlink(
    job_world: JobWorldFactory, attacks: Attacks
) -> None:
    world = job_world()
    alice = world.member()
    secret = world.server.data_dir.parent / "secret"  # root's, 0700: nobody else's to list
    secret.mkdir(mode=0o700)
    with (secret / SECRET_NAME).open("wb") as big:
        big.truncate(17 * 2**20)  # over the diff's size limit: named, not read

    job = alice.create_job(alice.repo, f"Wait {marker('hang')}")["jobId"]
    alice.start(job)
    alice.wait_status(job, {"running"})
    wait_for(lambda: alice.http.get(f"/jobs/{job}/files").status_code == 200, 60, "workspace")
    workspace = world.server.data_dir / "workspaces" / job
    as_alice = ["runuser", "-u", alice.user.name, "--"]
    swapper = subprocess.Popen(
        [*as_alice, "/usr/bin/python3", "-c", SWAPPER, str(workspace), str(secret), str(PAIRS)]
    )
    wait_for(lambda: (workspace / "ready").exists() or swapper.poll() is not None, 60, "swapper")
    try:
        for _ in range(ATTEMPTS):
            response = alice.http.get(f"/jobs/{job}/diff")
            attacks.tried()
            assert response.status_code in (200, 503), response.text  # 503: git refused a path
            assert SECRET_NAME not in response.text, response.text[:2000]
        assert swapper.poll() is None  # it swapped all along
    finally:
        swapper.kill()
        swapper.wait()
    assert alice.http.post(f"/jobs/{job}/cancel").status_code == 202

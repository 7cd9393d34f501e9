"""A server that dies while it computes a diff leaves the diff's temporary folder (root's
pack of the start commit, in the server's temporary folder): the next server removes it
at start, and nothing else of that folder, which others write too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from claude_batch_server.files.diffs import SCRATCH
from tests.support.server import ServerFactory

NOBODY = 65534


def test_a_dead_servers_diff_folders_are_removed_at_start(
    server_factory: ServerFactory, open_tmp: Path
) -> None:
    tmp = open_tmp / "tmp"
    tmp.mkdir(mode=0o1777)
    gone = subprocess.Popen(["true"])  # a server, dead now: its pid names no process
    gone.wait()
    # as a killed diff leaves them: one empty, one with the start pack's git dir inside
    empty = tmp / f"{SCRATCH}{gone.pid}-a1b2c3"
    full = tmp / f"{SCRATCH}{gone.pid}-d4e5f6"
    for folder in (empty, full):
        folder.mkdir(mode=0o711)
    git_dir = full / "cbs-git-0a1b2c" / "objects"
    (git_dir / "pack").mkdir(parents=True)
    (git_dir / "pack" / "pack-1.pack").write_bytes(b"PACK")
    (git_dir / "ab").mkdir()
    os.chown(git_dir / "ab", NOBODY, NOBODY)  # the user's git writes its loose objects here
    # what is not a dead server's: a live server's (this process stands for it), a user's
    # folder of the same name, a link, a file, anything else
    live = tmp / f"{SCRATCH}{os.getpid()}-live00"
    users = tmp / f"{SCRATCH}{gone.pid}-user00"
    target = open_tmp / "elsewhere"
    link = tmp / f"{SCRATCH}{gone.pid}-link00"
    plain = tmp / f"{SCRATCH}{gone.pid}-file00"
    other = tmp / "cbs-git-other"
    for folder in (live, users, target, other):
        folder.mkdir()
        (folder / "kept.txt").write_text("kept\n")
    os.chown(users, NOBODY, NOBODY)
    link.symlink_to(target)
    plain.write_text("kept\n")

    server = server_factory(TMPDIR=str(tmp))

    assert not empty.exists() and not full.exists()
    assert link.is_symlink() and link.readlink() == target
    for folder in (live, users, target, other):
        assert (folder / "kept.txt").read_text() == "kept\n"
    assert plain.read_text() == "kept\n"
    assert '"diff_folders_removed": 2' in server.log()

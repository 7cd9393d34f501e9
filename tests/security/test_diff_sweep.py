"""The sweep at start of the diffs' temporary folders a dead server left (`files/diffs.py`
`sweep`), attacked by a local user who writes in the same temporary folder: names that
look like a dead server's folder but are not, links, and links planted inside a dead
server's folder where the diff's git (running as the user) wrote. Root removes the dead
server's folders alone, follows no link, and a name alone never stops the server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from claude_batch_server.files.diffs import SCRATCH
from tests.security.conftest import Attacks
from tests.support.server import ServerFactory
from tests.support.users import UserFactory


def as_user(uid: int, *argv: str) -> None:
    subprocess.run(argv, user=uid, group=uid, check=True, capture_output=True)


def test_the_sweep_removes_a_dead_servers_folders_alone_whatever_users_plant(
    server_factory: ServerFactory, users: UserFactory, open_tmp: Path, attacks: Attacks
) -> None:
    mallory = users.create()
    tmp = open_tmp / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    gone = subprocess.Popen(["true"])  # a dead server: its pid names no process now
    gone.wait()
    dead = gone.pid
    precious = open_tmp / "precious"  # root's, elsewhere
    precious.mkdir()
    (precious / "kept.txt").write_text("kept\n")

    # a dead server's folder, as a killed diff leaves it: the user's git wrote in `ab`
    left = tmp / f"{SCRATCH}{dead}-a1b2c3"
    loose = left / "cbs-git-0a1b2c" / "objects" / "ab"
    loose.mkdir(parents=True)
    os.chown(loose, mallory.uid, mallory.uid)
    for name, target in (("file", precious / "kept.txt"), ("folder", precious)):
        as_user(mallory.uid, "ln", "-s", str(target), str(loose / name))
        attacks.tried()

    # names of the user's own that look like a dead server's folder
    planted: list[Path] = []
    for name in (
        f"{SCRATCH}\N{SUPERSCRIPT TWO}-x",  # str.isdigit() says yes, int() says no
        f"{SCRATCH}\N{ARABIC-INDIC DIGIT ONE}{'9' * 6}-x",  # int() reads it
        f"{SCRATCH}{'9' * 200}-x",
        f"{SCRATCH}-x",
        f"{SCRATCH}0-x",
        f"{SCRATCH}{dead}-mine",
    ):
        planted.append(tmp / name)
        as_user(mallory.uid, "mkdir", str(tmp / name))
        attacks.tried()
    for kind, name in (("link", "ln"), ("fifo", "mkfifo")):
        path = tmp / f"{SCRATCH}{dead}-{kind}"
        argv = ["ln", "-s", str(precious), str(path)] if name == "ln" else [name, str(path)]
        as_user(mallory.uid, *argv)
        planted.append(path)
        attacks.tried()

    server = server_factory(TMPDIR=str(tmp))  # fails if the server does not start

    assert not left.exists()
    assert (precious / "kept.txt").read_text() == "kept\n"
    for path in planted:
        assert path.is_symlink() or path.exists(), path
    assert '"diff_folders_removed": 1' in server.log()

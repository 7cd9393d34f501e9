"""A diff past its time limit is killed with its control group (`files/diffs.py`): the
pack of the start commit that root made for it (`servergit.borrowed`, in the server's
temporary folder) must go with it. A job makes its own diff overrun at will: the diff's
git runs as the job's user, and the job may stop any process of that user. Left behind,
each such diff keeps a copy of the start commit's whole tree in /tmp, root's, outside any
quota: asked again and again, they fill it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from claude_batch_server.accounts import lookup
from claude_batch_server.cgroups.base import root_name
from claude_batch_server.errors import Unavailable
from claude_batch_server.files import diffs
from claude_batch_server.jobs.containment import Containment
from claude_batch_server.servergit import Start
from tests.security.conftest import Attacks
from tests.support.api import git, home_of, make_git_repo
from tests.support.server import wait_for
from tests.support.users import UserFactory

FILES = 3000  # new files: the diff's git runs long enough to be caught


def stop_the_users_git(uid: int, found: list[str], done: threading.Event) -> None:
    """What the job does: stops its user's git that works in a git dir of the server's
    (as root here, which sees no more than the user sees of its own processes)."""
    while not done.is_set():
        for process in Path("/proc").iterdir():
            if not process.name.isdigit():
                continue
            try:
                if process.stat().st_uid != uid:
                    continue
                environ = (process / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            dirs = [v[8:] for v in environ if v.startswith(b"GIT_DIR=")]
            if dirs and b"/cbs-git-" in dirs[0]:
                os.kill(int(process.name), signal.SIGSTOP)
                found.append(dirs[0].decode())
                return


def test_a_killed_diff_leaves_no_start_pack_behind(
    users: UserFactory, attacks: Attacks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = users.create()
    source = make_git_repo(home_of(user), user, {"a.txt": "a\n"})
    for n in range(FILES):
        (source / f"new{n}.txt").write_text(f"{n}\n")
    subprocess.run(["chown", "-R", f"{user.name}:", str(source)], check=True)
    account = lookup(user.name)
    assert account is not None
    start = Start(source / ".git", git(source, "rev-parse", "HEAD").strip())
    contained = Containment.for_host(root_name(tmp_path), diffs.LIMITS)
    bounded = diffs.BoundedDiffs(contained)
    monkeypatch.setattr(diffs, "DIFF_TIMEOUT", 5.0)
    found: list[str] = []
    done = threading.Event()
    stopper = threading.Thread(target=stop_the_users_git, args=(account.uid, found, done))
    stopper.start()

    async def ask() -> None:
        with pytest.raises(Unavailable, match="longer than"):
            await bounded.diff("job1", None, account, source, start)

    try:
        asyncio.run(ask())
    finally:
        done.set()
        stopper.join()
        contained.close()
    attacks.tried()
    wait_for(lambda: bool(found), 1, "the diff's git, stopped")
    [git_dir] = found
    assert not Path(git_dir).exists(), sorted(Path(git_dir).iterdir())

"""The start pack of a borrowed git dir (`servergit._pack_of`, through `pack_objects`): the
gits root runs for it enter, as root, only folders of root's that no one else may change
(a child enters its cwd before it takes a user's id: a folder a user could swap for a link
would take root anywhere), read the stored repository alone, and leave the pack root's,
readable by the user's group and no one else."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from claude_batch_server import servergit
from tests.security.conftest import Attacks, stored_start
from tests.support.users import UserFactory


def safe_for_root(folder: Path) -> bool:
    """Root's, and no one else may change it or any folder above it (a sticky folder such
    as /tmp lets others add entries, never move root's)."""
    for path in (folder, *folder.parents):
        info = path.lstat()
        shared = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
        if stat.S_ISLNK(info.st_mode) or info.st_uid != 0 or shared:
            return False
    return True


def test_roots_gits_for_the_start_pack_enter_roots_folders_alone(
    users: UserFactory, attacks: Attacks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = users.create()
    made = stored_start(owner, tmp_path)
    commit = made.start.commit

    runs: list[dict[str, Any]] = []
    real_run = servergit.run

    def spy(args: Sequence[str], **options: Any) -> bytes:
        where = options.get("cwd") or options.get("work_tree") or options["git_dir"]
        runs.append({"args": list(args), "user": options.get("user"), "cwd": Path(where)})
        return real_run(args, **options)

    monkeypatch.setattr(servergit, "run", spy)
    with servergit.borrowed(made.workspace, made.user, made.start) as borrowed:
        alternates = (borrowed.git_dir / "objects" / "info" / "alternates").read_text()
        [store] = [Path(line) for line in alternates.splitlines()]
        as_root = [run for run in runs if run["user"] is None]
        attacks.tried(len(as_root))
        assert [run["args"][0] for run in as_root] == ["rev-list", "pack-objects"]
        for run in as_root:
            assert safe_for_root(run["cwd"]), run
            assert run["args"][-1] in {f"{commit}^{{commit}}", "pack"}, run  # nothing else
        pack = store / "pack"
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (store, pack)}
        assert modes == {store.name: 0o750, "pack": 0o750}
        for path in (store, pack, *pack.iterdir()):
            assert (path.stat().st_uid, path.stat().st_gid) == (0, made.user.gid), path
        assert {stat.S_IMODE(path.stat().st_mode) for path in pack.iterdir()} == {0o440}

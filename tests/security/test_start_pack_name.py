"""The pack of a job's start commit (`servergit.borrowed`) is readable by the job's group,
and kept from everyone else only by its random folder name. Whatever root runs while
making it is in `ps` (every local user reads /proc/<pid>/cmdline): that name must not be
there, or a user who shares the victim's group (a common `users` primary group, or a
supplementary one) reads the victim's repository from it while the diff, patch or push
runs."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from claude_batch_server import servergit
from tests.security.conftest import Attacks, stored_start
from tests.support.users import UserFactory


def test_the_start_packs_random_name_is_never_in_a_command_line(
    users: UserFactory, attacks: Attacks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = users.create()
    other = users.create(groups=(owner.name,))  # shares the owner's (primary) group
    made = stored_start(owner, tmp_path)

    command_lines: list[list[str]] = []  # what `ps` shows of each git the server starts
    real_run = servergit.run

    def spy(args: Sequence[str], **options: Any) -> bytes:
        config: Mapping[str, str] | None = options.get("config")
        command_lines.append(servergit.command(args, config))
        return real_run(args, **options)

    monkeypatch.setattr(servergit, "run", spy)
    with servergit.borrowed(made.workspace, made.user, made.start) as borrowed:
        alternates = (borrowed.git_dir / "objects" / "info" / "alternates").read_text()
        [store] = [Path(line) for line in alternates.splitlines()]
        leaked = [line for line in command_lines if any(store.name in arg for arg in line)]
        # what the other user does with a name read from `ps`
        steal = f'for pack in {store}/pack/*.pack; do wc -c < "$pack"; done'
        read = subprocess.run(
            ["runuser", "-u", other.name, "--", "sh", "-c", steal],
            capture_output=True,
            text=True,
            check=False,
        )
        attacks.tried()
    assert leaked == [], f"the start pack's folder is in root's argv: {leaked}"
    # the group may read it (git runs as the owner): the name is all that guards it
    assert read.returncode == 0 and int(read.stdout) > 0, read

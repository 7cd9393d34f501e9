"""What the results tests share: a job that changes text and binary files, a settled push
result, and git as a given user."""

from __future__ import annotations

import pwd
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.fake_anthropic import FakeAnthropic, bash, text
from tests.support.api import Api, home_of
from tests.support.server import wait_for
from tests.support.users import OsUser

# data.bin starts with a NUL: git takes it for binary whatever the random bytes are
CHANGE = (
    "printf 'hello world\\n' > hello.txt"
    " && { printf '\\000'; head -c 700 /dev/urandom; } > data.bin"
    " && printf 'one more line\\n' >> README.md && rm src/app.py"
)


# What a hostile job leaves in its workspace for the git that runs after it: each planted
# command notes the index git used: one in a git dir of the server (cbs-git-…) when ours.
TRAP = 'echo "$GIT_INDEX_FILE" >> $HOME/planted-ran'
PLANT = (
    f"git config core.fsmonitor '{TRAP}' && git config filter.evil.clean '{TRAP}; cat'"
    f" && git config diff.evil.textconv '{TRAP}; cat' && git config core.hooksPath .git/hooks"
    " && printf '* filter=evil diff=evil\\n' > .gitattributes"
    " && mkdir -p .git/hooks"
    f" && for h in pre-commit pre-push post-commit; do printf '#!/bin/sh\\n{TRAP}\\n'"
    " > .git/hooks/$h && chmod +x .git/hooks/$h; done"
)


def change_script(fake: FakeAnthropic, *, plant: bool = False) -> str:
    """A marker for a job that adds a text and a binary file, edits one and removes one;
    with `plant`, it also plants commands in its git configuration, hooks and attributes."""
    command = f"{PLANT} && {CHANGE}" if plant else CHANGE
    return fake.add_script(f"change-{secrets.token_hex(4)}", [bash(command), text("Changed.")])


def settled_result(api: Api, job_id: str, deadline: float = 60) -> dict[str, Any]:
    """The job's `result` once its push has run: pushed, or an error."""

    def settled() -> dict[str, Any] | None:
        result: dict[str, Any] | None = api.job(job_id)["result"]
        return result if result and (result["pushed"] or result["error"]) else None

    found: dict[str, Any] = wait_for(settled, deadline, f"the push of job {job_id}", 0.1)
    return found


def as_user(user: OsUser, cwd: Path, *args: str) -> str:
    """git run as `user`, as they would at their shell."""
    entry = pwd.getpwnam(user.name)
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
        env={"HOME": str(home_of(user)), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    return result.stdout.strip()


def set_identity(user: OsUser, name: str, email: str) -> None:
    """The user's own ~/.gitconfig names them."""
    home = home_of(user)
    as_user(user, home, "config", "--global", "user.name", name)
    as_user(user, home, "config", "--global", "user.email", email)


def root_git(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    """git as root on users' repositories. git 2.39 reads safe.directory only from the
    global file (not from -c or the environment), so a throwaway one says it."""
    with tempfile.NamedTemporaryFile("w", suffix=".gitconfig") as config:
        config.write("[safe]\n\tdirectory = *\n")
        config.flush()
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            check=True,
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": "/nonexistent",
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": config.name,
                "GIT_COMMITTER_NAME": "Tester",
                "GIT_COMMITTER_EMAIL": "tester@example.invalid",
            },
        )
    return result.stdout.decode().strip()

"""git as a user: the registering user's clone, with their own configuration (it runs as
them, in a folder of theirs), and a workspace's diff, with the server's (`servergit`)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from claude_batch_server import servergit
from claude_batch_server.accounts import Account
from claude_batch_server.repositories.validation import redact

CLONE_TIMEOUT = 15 * 60
QUERY_TIMEOUT = 60
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
# no prompts, and a host that does not answer ends the clone instead of holding it
SSH_COMMAND = "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=30"
ERROR_TAIL = 2000  # characters of git's stderr kept as the repository's error


GitError = servergit.GitError


@dataclass(frozen=True)
class Head:
    commit: str
    branch: str


def environment(account: Account) -> dict[str, str]:
    """A clean environment for `account`: no prompts, no hooks, only the allowed protocols."""
    return {
        "HOME": str(account.home),
        "USER": account.name,
        "LOGNAME": account.name,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
        "GIT_SSH_COMMAND": SSH_COMMAND,
        "GIT_CONFIG_NOSYSTEM": "1",
    }


def run_as(account: Account, args: list[str], cwd: Path, timeout: float) -> str:
    """git `args` as `account`, in its own session; GitError carries git's own words."""
    command = ["git", "-c", "core.hooksPath=/dev/null", "-c", f"safe.directory={cwd}", *args]
    try:
        result = subprocess.run(
            command,
            cwd=cwd,
            env=environment(account),
            user=account.uid,
            group=account.gid,
            extra_groups=list(account.supplementary_gids),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise GitError(f"git {args[0]} timed out after {int(timeout)} s") from error
    if result.returncode != 0:
        raise GitError(redact(result.stderr.strip()[-ERROR_TAIL:]) or f"git {args[0]} failed")
    return result.stdout


def clone(account: Account, url: str, branch: str | None, dest: Path) -> None:
    """Clone `url` into `dest` (which must not exist; its parent must be the user's)."""
    args = ["clone", "--quiet", "--template=", "--no-recurse-submodules"]
    if branch:
        args += ["--branch", branch, "--single-branch"]
    run_as(account, [*args, "--", url, str(dest)], dest.parent, CLONE_TIMEOUT)


def head(account: Account, repo: Path) -> Head:
    commit = run_as(account, ["rev-parse", "--verify", "HEAD^{commit}"], repo, QUERY_TIMEOUT)
    branch = run_as(account, ["rev-parse", "--abbrev-ref", "HEAD"], repo, QUERY_TIMEOUT)
    return Head(commit.strip(), branch.strip())


IMAGE_DIR = ".claude-batch"  # the job's images: the server put them there, not the job


def diff_workspace(
    account: Account, workspace: Path, start: servergit.Start, leave_out: Sequence[str] = ()
) -> bytes:
    """What a workspace changed against its `start` commit, new untracked files included,
    but for the files `leave_out` (paths from its top), as the workspace's user and with a
    git dir of the server's own (`servergit.borrowed`): the job wrote the workspace's
    `.git`, and none of it runs or is read here; the start commit's files are read from
    the stored repository. An index of ours, at `start`, with intent-to-add entries for
    new files: nothing is hashed into any store."""
    user = servergit.RunAs(account.uid, account.gid, account.supplementary_gids)
    with servergit.borrowed(workspace, user, start) as git:
        env = {"GIT_INDEX_FILE": str(git.scratch / "index")}
        git.run(["read-tree", start.commit], env=env)
        left_out = [f":(exclude,top,literal){path}" for path in leave_out]
        git.run(["add", "--all", "--intent-to-add", "--", ".", *left_out], env=env)
        pathspec = ["--", ".", f":(exclude,top){IMAGE_DIR}", *left_out]
        diff = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--ignore-submodules=all"]
        return git.run([*diff, start.commit, *pathspec], env=env)

"""git, always run as a user: the registering user for clones, never root.

A repository's `.git/config` is written by whoever cloned it, and settings such as
`core.fsmonitor` run commands; so the server never runs git as root on a tree a user wrote.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from claude_batch_server.accounts import Account
from claude_batch_server.repositories.validation import redact

CLONE_TIMEOUT = 15 * 60
QUERY_TIMEOUT = 60
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
ERROR_TAIL = 2000  # characters of git's stderr kept as the repository's error


class GitError(Exception):
    pass


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
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
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


MAX_DIFF = 64 * 1024 * 1024
DIFF_TIMEOUT = 300


def diff_workspace(account: Account, workspace: Path, commit: str) -> bytes:
    """What a workspace changed against `commit`, new untracked files included, run as the
    workspace's user. A throwaway index keeps the workspace's own index untouched."""
    index = workspace / ".git" / f"cbs-diff-{os.getpid()}-{threading.get_ident()}.index"
    env = {**environment(account), "GIT_INDEX_FILE": str(index)}
    base = [
        "git",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        f"safe.directory={workspace}",
        "-c",
        "core.fsmonitor=false",
        "-c",
        "core.quotePath=false",
    ]
    steps = [
        ["read-tree", commit],
        ["add", "--all", "--", ".", ":!.claude-batch"],
        ["diff", "--cached", "--no-color", "--no-ext-diff", "--no-textconv", commit],
    ]
    output = b""
    try:
        for args in steps:
            output = _run_bounded(account, [*base, *args], workspace, env)
    finally:
        index.unlink(missing_ok=True)
    return output


def _run_bounded(account: Account, command: list[str], cwd: Path, env: dict[str, str]) -> bytes:
    """Runs `command` as `account`; its output is read up to MAX_DIFF bytes, and it is
    killed past DIFF_TIMEOUT seconds or that many bytes."""
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            user=account.uid,
            group=account.gid,
            extra_groups=list(account.supplementary_gids),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        ) as process,
    ):
        assert process.stdout is not None
        timer = threading.Timer(DIFF_TIMEOUT, process.kill)
        timer.start()
        try:
            output = process.stdout.read(MAX_DIFF + 1)
            if len(output) > MAX_DIFF:
                process.kill()
                raise GitError(f"the diff is larger than {MAX_DIFF // (1024 * 1024)} MiB")
            process.wait()
        finally:
            timer.cancel()
        if process.returncode != 0:
            errors.seek(0)
            message = errors.read(ERROR_TAIL * 4).decode("utf-8", "replace").strip()
            raise GitError(redact(message[-ERROR_TAIL:]) or f"git exited {process.returncode}")
    return output

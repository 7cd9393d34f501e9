"""A job's changes as one commit by its user: for the patch, and for the branch push.

git runs as the job's user through `servergit.borrowed`: a git dir of the server's making
over the workspace, whose `.git` (config, hooks, attributes, index) is the job's writing
and is never used as a git dir. The start commit is read from the stored repository
(`servergit.Start`), never from the workspace's object store, where the job may have put
anything under any object's name: the commit's tree is the start commit's with the
workspace's files, whatever that store holds. Its new objects go to the scratch git dir;
a push's commit and what it adds go to the workspace's object store too (data, never
run), where a resumed job's next push finds the commit it builds on. What git reads of
that store then (that commit, the history below the start commit) decides what it sends,
never what the commit holds: the remote takes objects by the hashes of their contents.
Only the push reads the user's own global configuration (their credential helper, their
ssh), running as them: as when they push by hand.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from claude_batch_server import servergit
from claude_batch_server.accounts import Account
from claude_batch_server.logs import log
from claude_batch_server.repositories.git import ALLOWED_PROTOCOLS, SSH_COMMAND

PUSH_TIMEOUT = 600.0  # seconds; each local step has servergit's own bound
MAX_PATCH = 64 * 1024 * 1024
MAX_IDENT = 200
MAX_MESSAGE_BODY = 64 * 1024
SUBJECT = 72
EXCLUDED = ":(exclude,top).claude-batch"  # the job's uploaded images, not its work
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Ident:
    name: str
    email: str


class Scratch:
    """git over one workspace, as its user, with the server's configuration."""

    def __init__(
        self, git: servergit.Borrowed, account: Account, workspace: Path, start: str
    ) -> None:
        self._git = git
        self._account = account
        self._start = start
        # the scratch git dir's own objects, and the start commit from the stored repository
        self._env: dict[str, str | None] = {"GIT_INDEX_FILE": str(git.scratch / "index")}
        # and after them the workspace's: earlier pushes' commits, the history below `start`
        self._objects = workspace / ".git" / "objects"
        self._beside = self._env | {"GIT_ALTERNATE_OBJECT_DIRECTORIES": str(self._objects)}

    def _run(
        self,
        args: list[str],
        env: Mapping[str, str | None] | None = None,
        timeout: float = servergit.TIMEOUT,
    ) -> str:
        output = self._git.run(args, env={**self._env, **(env or {})}, timeout=timeout)
        return output.decode("utf-8", "replace").strip()

    def ident(self) -> Ident:
        """The user's own name and email from their git configuration, else user@host."""
        values = []
        for key in ("user.name", "user.email"):
            try:
                value = self._run(["config", "--global", "--get", key], self._user_config())
            except servergit.GitError:  # not set
                value = ""
            values.append(_clean(value))
        name = self._account.name
        return Ident(values[0] or name, values[1] or f"{name}@{socket.gethostname()}")

    def snapshot(self, parent: str, ident: Ident, when: datetime, message: str) -> str | None:
        """The workspace as a commit on `parent` (by `ident`, dated `when`: the same job
        end gives the same commit, so a push tried again finds its work done), its tree
        the workspace's files against the job's start commit; None if nothing changed."""
        self._run(["read-tree", self._start])
        self._run(["add", "--all", "--", ".", EXCLUDED])
        tree = self._run(["write-tree"])
        # a parent other than the start commit is one an earlier push kept in the workspace
        env = self._env if parent == self._start else self._beside
        if tree == self._run(["rev-parse", "--verify", f"{parent}^{{tree}}"], env):
            return None
        stamp = f"@{int(when.timestamp())} +0000"
        people = {
            "GIT_AUTHOR_NAME": ident.name,
            "GIT_AUTHOR_EMAIL": ident.email,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": ident.name,
            "GIT_COMMITTER_EMAIL": ident.email,
            "GIT_COMMITTER_DATE": stamp,
        }
        path = self._message(message)  # a file: the prompt never goes in argv
        return self._run(["commit-tree", tree, "-p", parent, "-F", str(path)], env | people)

    def format_patch(self, commit: str) -> bytes:
        args = ["format-patch", "--stdout", "--binary", "--no-signature", "--no-textconv"]
        return self._git.run([*args, "--no-ext-diff", "-1", commit], env=self._env, limit=MAX_PATCH)

    def push(self, url: str, commit: str, branch: str) -> None:
        """Pushes `commit` as `branch` to `url`, never forced; the URL and the refspec go
        through the environment (argv is world-readable, and a URL may hold a token)."""
        env = self._user_config() | {
            "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
            "GIT_SSH_COMMAND": SSH_COMMAND,
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "remote.origin.url",
            "GIT_CONFIG_VALUE_0": url,
            "GIT_CONFIG_KEY_1": "remote.origin.push",
            "GIT_CONFIG_VALUE_1": f"{commit}:refs/heads/{branch}",
        }
        self._run(
            ["push", "--no-verify", "--quiet", "origin"], self._beside | env, timeout=PUSH_TIMEOUT
        )
        self._keep(commit)

    def _keep(self, commit: str) -> None:
        """`commit` and what it adds to the start commit, packed into the workspace's object
        store, where the push of the job resumed finds the commit it builds on. The job may
        have broken its store: the push is done, only a resumed job's next one then fails."""
        # pack-objects writes its pack in the primary store first, where the user writes
        # no pack of the scratch git dir's (servergit.borrowed): the workspace's is primary
        into = self._env | {
            "GIT_OBJECT_DIRECTORY": str(self._objects),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(self._git.git_dir / "objects"),
        }
        # the workspace's path in argv, not as git's cwd: the child enters its cwd as root,
        # before it takes the user's id, and the job may make that folder a link to anywhere
        pack = str(self._objects / "pack" / "pack")
        try:
            servergit.pack_objects(
                self._git.run,
                [commit, "--not", self._start],
                pack,
                listing=self._beside,
                packing=into,
            )
        except servergit.GitError as error:
            log.warning("the pushed commit was not kept in the workspace", error=str(error))

    def _user_config(self) -> dict[str, str | None]:
        """The user's HOME and their own global git configuration: for the push alone."""
        return {
            "HOME": str(self._account.home),
            "USER": self._account.name,
            "LOGNAME": self._account.name,
            "GIT_CONFIG_GLOBAL": None,
        }

    def _message(self, message: str) -> Path:
        """The message in the user's private folder of the git dir (theirs: no link is
        followed, no file of theirs is overwritten), readable by them alone."""
        path = self._git.scratch / "message"
        try:
            fd = os.open(path, _CREATE, 0o600)
        except OSError as error:  # a process of the user's put something there first
            raise servergit.GitError(f"the commit message could not be written: {error}") from error
        with os.fdopen(fd, "w") as file:
            os.fchown(file.fileno(), self._account.uid, self._account.gid)
            file.write(message)
        return path


@contextlib.contextmanager
def scratch(account: Account, workspace: Path, start: servergit.Start) -> Iterator[Scratch]:
    user = servergit.RunAs(account.uid, account.gid, account.supplementary_gids)
    with servergit.borrowed(workspace, user, start) as git:
        yield Scratch(git, account, workspace, start.commit)


def _clean(value: str) -> str:
    """An ident part git takes: one line, no angle brackets, bounded."""
    return "".join(c for c in value.strip() if c not in "<>\n\r\0")[:MAX_IDENT].strip()


def message_of(prompt: str, job_id: str) -> str:
    """The commit message: the prompt's first line as the subject, the rest as the body."""
    text = prompt.strip()
    first, _, rest = text.partition("\n")
    first = first.strip() or "Claude Code job"
    if len(first) <= SUBJECT:
        subject, body = first, rest.strip()
    else:
        subject, body = first[: SUBJECT - 1].rstrip() + "…", text
    parts = [subject, body[:MAX_MESSAGE_BODY], f"Claude-Batch-Job: {job_id}"]
    return "\n\n".join(part for part in parts if part) + "\n"

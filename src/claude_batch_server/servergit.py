"""git with the server's own configuration: the one way the server runs git over a tree
that a user or a job wrote (a stored repository, a workspace).

git reads the configuration of the repository it works in, and settings there run
commands: `core.fsmonitor`, filters, diff drivers, `include.path` to anything, hooks; so do
`info/attributes` and the `.gitattributes` of the tree, which name filters and drivers.
No switch makes git ignore a repository's own configuration, so git never gets to see one
the server did not write:

* a stored repository's git dir is made the server's own when it is adopted
  (`own_git_dir`): a configuration written here, no hooks, no `info/`, nothing but HEAD,
  refs, objects, the index and the shallow list;
* a workspace belongs to its job, whose `.git` is never used as a git dir: `Borrowed`
  is a git dir of the server's making (HEAD, config, objects reached through an
  alternates file) with the workspace as work tree.

A job also writes its workspace's object store: it may put anything there under any name
(a loose object or a pack that claims the id of a file of its start commit, alternates
to a store of its own). So git never reads the start commit there: `borrowed` packs the
start commit's tree (`Start`), as root, from the stored repository the job cannot write,
into a folder of root's that the user's group may read, and that pack is the only store git is
pointed to besides the loose objects it writes (in the git dir's own `objects/`, whose
packs are root's: git reads no loose object where a pack has one). Replace refs
(GIT_NO_REPLACE_OBJECTS as well), grafts and the shallow list are the git dir's, which
has none. Only a push also reaches the workspace's store (`results/commit.py`), for the
commits it builds on, once the commit's tree is made.

And always: no system or global configuration nor attributes (the environment below),
`-c` for what a default would read from HOME, no hooks, no fsmonitor, no external diff or
textconv. An in-tree `.gitattributes` may then name a filter or a diff driver: the
configuration defines none, so none runs. (git 2.32+: GIT_CONFIG_GLOBAL.)

`Borrowed.run` is what commits, formats a patch or pushes from a workspace
(`results/commit.py`), with `config` or `env` for what it needs. A push alone reads the
user's own global configuration (their credential helper, their ssh), running as them:
`env` then names their HOME and unsets GIT_CONFIG_GLOBAL.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Protocol

from claude_batch_server.repositories.validation import redact

ERROR_TAIL: Final = 2000  # characters of git's stderr kept in an error
MAX_OUTPUT: Final = 64 * 1024 * 1024  # bytes of output read from one command
TIMEOUT: Final = 300.0  # seconds one command may run

ENVIRONMENT: Final = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/nonexistent",  # no ~/.gitconfig, ~/.config/git/{config,attributes,ignore}
    "LANG": "C.UTF-8",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_OPTIONAL_LOCKS": "0",
}

# Settings whose defaults run or read something of a user's: pinned on every command.
PINNED: Final = (
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.attributesFile", "/dev/null"),
    ("core.excludesFile", "/dev/null"),
    ("core.quotePath", "false"),
    ("submodule.recurse", "false"),
    # a nested repository is looked into with its own configuration: never
    ("diff.ignoreSubmodules", "all"),
)

# What a stored repository's git dir keeps; all of it is data git reads, none runs.
KEPT: Final = frozenset({"HEAD", "objects", "refs", "packed-refs", "index", "shallow"})
# Inside `objects/info/`: these would lead git to objects elsewhere.
DROPPED_FROM_INFO: Final = ("alternates", "http-alternates")


class GitError(Exception):
    """git failed; the message carries git's own words (credentials redacted)."""


@dataclass(frozen=True)
class RunAs:
    """The account a command runs as; None in `run` means the server's own (root)."""

    uid: int
    gid: int
    groups: Sequence[int] = ()


def command(args: Sequence[str], config: Mapping[str, str] | None = None) -> list[str]:
    """`git` with the pinned settings, then `config`, then `args`."""
    argv = ["git"]
    for key, value in (*PINNED, *(config or {}).items()):
        argv += ["-c", f"{key}={value}"]
    return [*argv, *args]


def run(
    args: Sequence[str],
    *,
    git_dir: Path,
    work_tree: Path | None = None,
    user: RunAs | None = None,
    env: Mapping[str, str | None] | None = None,
    config: Mapping[str, str] | None = None,
    limit: int = MAX_OUTPUT,
    timeout: float = TIMEOUT,
    stdin: IO[bytes] | None = None,
    cwd: Path | None = None,
) -> bytes:
    """git `args` on the git dir `git_dir` -- which must be the server's own -- and the
    work tree `work_tree`, as `user`, reading `stdin` (a file; default none), in `cwd`
    (default the work tree, else the git dir); a variable of `env` that is None is unset.
    Output past `limit` bytes or a run past `timeout` seconds kills it and all it started
    (ssh, a credential helper): GitError; so does a non-zero exit."""
    merged = {**ENVIRONMENT, "GIT_DIR": str(git_dir), **(env or {})}
    environment = {key: value for key, value in merged.items() if value is not None}
    if work_tree is not None:
        environment["GIT_WORK_TREE"] = str(work_tree)
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            command(args, config),
            cwd=cwd or work_tree or git_dir,
            env=environment,
            user=None if user is None else user.uid,
            group=None if user is None else user.gid,
            extra_groups=None if user is None else list(user.groups),
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        ) as process,
    ):
        return _bounded(process, errors, args[0], limit, timeout)


def _bounded(
    process: subprocess.Popen[bytes], errors: IO[bytes], name: str, limit: int, timeout: float
) -> bytes:
    assert process.stdout is not None
    timer = threading.Timer(timeout, _kill_session, (process,))
    timer.start()
    try:
        output = process.stdout.read(limit + 1)
        if len(output) > limit:
            process.kill()
            raise GitError(f"git {name}: more than {limit // (1024 * 1024)} MiB of output")
        process.wait()
    finally:
        timer.cancel()
    if process.returncode < 0:
        raise GitError(f"git {name} was stopped after {int(timeout)} s")
    if process.returncode != 0:
        errors.seek(0)
        message = errors.read(ERROR_TAIL * 4).decode("utf-8", "replace").strip()
        raise GitError(redact(message[-ERROR_TAIL:]) or f"git {name} exited {process.returncode}")
    return output


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    """The whole session the command leads (it was started in a new one)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Start:
    """A job's start commit, and the git dir of the server's own that holds it (a stored
    repository, root's: the job cannot write it)."""

    git_dir: Path
    commit: str


class Borrowed:
    """A git dir of the server's making over a work tree someone else owns (a workspace):
    HEAD, config, `objects/` with its packs and alternates are root's and read-only; the
    loose objects' folders of `objects/` (where git writes new objects, e.g. the empty
    blob of an intent-to-add) and `work/` (for an index) belong to `user`, who reaches
    other objects through the alternates file and nothing else of the tree."""

    def __init__(self, root: Path, work_tree: Path, user: RunAs) -> None:
        self.git_dir = root
        self.work_tree = work_tree
        self.user = user
        self.scratch = root / "work"  # the user's: an index of ours goes here

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str | None] | None = None,
        config: Mapping[str, str] | None = None,
        limit: int = MAX_OUTPUT,
        timeout: float = TIMEOUT,
        stdin: IO[bytes] | None = None,
    ) -> bytes:
        """`run` with this git dir, work tree and user."""
        return run(
            args,
            git_dir=self.git_dir,
            work_tree=self.work_tree,
            user=self.user,
            env=env,
            config=config,
            limit=limit,
            timeout=timeout,
            stdin=stdin,
        )


@contextlib.contextmanager
def borrowed(work_tree: Path, user: RunAs, start: Start) -> Iterator[Borrowed]:
    """A `Borrowed` git dir over `work_tree`, whose other objects are a pack of `start`'s
    tree made here; removed afterwards. It lives in the server's temporary folder, in a
    directory of root's that others may pass through but neither list nor change."""
    root = Path(tempfile.mkdtemp(prefix="cbs-git-"))
    try:
        root.chmod(0o711)
        _write(root / "HEAD", "ref: refs/heads/detached\n")
        # a larger blob would be streamed into a pack of its own, where the user writes none
        _write(root / "config", _config(None) + "[core]\n\tbigFileThreshold = 2g\n")
        objects = root / "objects"
        # modes set, not asked of mkdir: the server's umask (077) would take the user's read
        for readable in (root / "refs", objects, objects / "pack"):
            readable.mkdir()
            readable.chmod(0o755)
        # the alternates name the start pack's folder: for the user's group alone
        info = objects / "info"
        info.mkdir()
        os.chown(info, 0, user.gid)
        info.chmod(0o750)
        _write(info / "alternates", f"{_pack_of(start, root, user)}\n")
        # The user's git writes loose objects alone (core.bigFileThreshold), each in the
        # folder of its id's first two digits: those are the user's, the packs and the
        # alternates root's. git looks in every pack before any loose object, so nothing
        # the job plants here (it may find this dir and stop its user's git) stands for an
        # object of the start pack.
        private = [objects / f"{prefix:02x}" for prefix in range(256)]
        for folder in (*private, root / "work"):
            folder.mkdir(mode=0o700)
            os.chown(folder, user.uid, user.gid)
        yield Borrowed(root, work_tree, user)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _pack_of(start: Start, root: Path, user: RunAs) -> Path:
    """An object store under `root` holding one pack: `start`'s commit, tree and blobs,
    read as root from its git dir. Root's and read-only; `user`'s group may read it, and
    only by its random name in a folder no one else can list."""
    objects = root / secrets.token_hex(16)
    pack = objects / "pack"
    for folder in (objects, pack):
        folder.mkdir(mode=0o700)
    revisions = ["--no-walk", "--end-of-options", f"{start.commit}^{{commit}}"]
    try:
        # the path relative to `cwd`: argv is in `ps`, and the name is all that keeps the
        # pack from others of the user's group; one thread: a diff's control group bounds
        # its processes, threads included
        git = functools.partial(run, git_dir=start.git_dir, cwd=pack)
        pack_objects(git, revisions, "pack", threads=1)
    except GitError as error:
        message = f"the start commit {start.commit} could not be read from the stored"
        raise GitError(f"{message} repository: {error}") from error
    for path, mode in (*((entry, 0o440) for entry in pack.iterdir()), (pack, 0o750)):
        os.chown(path, 0, user.gid)
        path.chmod(mode)
    os.chown(objects, 0, user.gid)
    objects.chmod(0o750)
    return objects


class Git(Protocol):
    """`run` or `Borrowed.run`, with where and as whom it runs bound."""

    def __call__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str | None] | None = None,
        stdin: IO[bytes] | None = None,
    ) -> bytes: ...


def pack_objects(
    git: Git,
    revisions: Sequence[str],
    base: str,
    *,
    listing: Mapping[str, str | None] | None = None,
    packing: Mapping[str, str | None] | None = None,
    threads: int = 0,
) -> None:
    """The objects `revisions` reach (arguments of `rev-list --objects`), listed by `git`
    with the environment `listing`, packed into `base`-<hash>.pack (and .idx) with the
    environment `packing` and `threads` threads (0: git's own choice). `base` goes in
    argv, which `ps` shows: a name that must stay secret is relative to `git`'s cwd."""
    with tempfile.TemporaryFile() as wanted:
        wanted.write(git(["rev-list", "--objects", "--no-object-names", *revisions], env=listing))
        wanted.seek(0)
        packed = ["pack-objects", "-q", f"--threads={threads}", base]
        git(packed, env=packing, stdin=wanted)


def own_git_dir(git_dir: Path) -> None:
    """Make the git dir of a sealed tree (root's, beyond its maker's reach) the server's own:
    everything but `KEPT` removed, alternates too, and a configuration written here. A
    symlink is never followed: the tree's maker chose where it points."""
    object_format = _object_format(git_dir / "config")
    for entry in git_dir.iterdir():
        if entry.name not in KEPT or entry.is_symlink():
            _remove(entry)
    info = git_dir / "objects" / "info"  # `objects` is a real directory, or gone by now
    if info.is_symlink():
        info.unlink()
    elif info.is_dir():
        for name in DROPPED_FROM_INFO:
            _remove(info / name)
    temporary = git_dir / ".config.new"
    _write(temporary, _config(object_format))
    temporary.rename(git_dir / "config")  # a new file: a descriptor kept on the old one
    # writes nowhere that counts


def is_own(git_dir: Path) -> bool:
    """Whether this git dir has the configuration `own_git_dir` writes now: one an older
    version wrote is made again (at start, by the workspace engine)."""
    config = git_dir / "config"
    if config.is_symlink() or not config.is_file():
        return False
    with config.open("rb") as file:
        text = file.read(4096)  # ours is far shorter: a longer one is not ours
    return text in {_config(None).encode(), _config("sha256").encode()}


_MARK: Final = "# written by claude-batch-server: git here runs only what is written here"


def _config(object_format: str | None) -> str:
    lines = [_MARK]
    version = 1 if object_format else 0
    lines += ["[core]", f"\trepositoryformatversion = {version}", "\tbare = false"]
    lines += ["\tfilemode = true", "\tlogallrefupdates = true"]
    # A workspace shows the stored files under its user's id (idmapped, chowned or copied),
    # with new inode numbers and change times: git compares only the whole-second mtime,
    # the size and the x bit, so the stored index holds for every user as it is, without a
    # rehash of the tree (a file rewritten since has a new mtime, or a racy one is read).
    lines += ["\tcheckStat = minimal"]
    if object_format:
        lines += ["[extensions]", f"\tobjectformat = {object_format}"]
    return "\n".join(lines) + "\n"


def _object_format(config: Path) -> str | None:
    """sha256 if the clone's configuration says so (read with `--file`: no include is
    followed, nothing runs); else None, git's default sha1."""
    if config.is_symlink() or not config.is_file():
        return None
    result = subprocess.run(
        ["git", "config", "--file", str(config), "--get", "extensions.objectformat"],
        env=ENVIRONMENT,
        capture_output=True,
        text=True,
        check=False,
    )
    return "sha256" if result.stdout.strip().lower() == "sha256" else None


def _write(path: Path, text: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o644)
        file.write(text)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)

"""Benchmark of the copy-on-write workspace strategies on one filesystem.

    sudo .venv/bin/python -m bench.workspaces DIR [--files N] [--size-mb MB] [--reps N]
                                                  [--scale K] [--strategy NAME ...] [--no-peers]

Builds a synthetic upstream repository in DIR (N files of MB in all, in nested folders, with
a few commits, packed), clones and adopts it as the server does, then measures every
strategy that works there (or those named), and as peers `git worktree add` and
`cp -a --reflink=never` (each followed by the `chown -R` that makes it the user's). For each:
the median time until a workspace is ready for its user -- the first job of a new user, every
later job of a user, and, after a pull (a new commit upstream, cloned and adopted), the first
job of each user at the new commit, which pays for whatever a strategy keeps per user and
commit -- the disk each adds, measured as the filesystem's free-space delta after a sync
(du would count shared extents again), and the first `git status` as the user in a first
job's workspace at the new commit and in a later job's, with the number of files whose stat
data disagree with git's index there (each one git must read again). Prints a markdown
table; everything made in DIR is removed afterwards. Needs root.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from claude_batch_server.accounts import Account
from claude_batch_server.settings import CowStrategy
from claude_batch_server.workspaces import WorkspaceEngine, trees

MB = 1 << 20
FIRST_UID = 200_000  # users that need no passwd entry: the engine works with ids
GIT = [
    "git",
    "-c",
    "user.name=Bench",
    "-c",
    "user.email=bench@example.invalid",
    "-c",
    "core.compression=0",  # random bytes do not compress; do not spend time trying
    "-c",
    "pack.compression=0",
    "-c",
    "gc.auto=0",
]
USER_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1"}


@dataclass
class Row:
    method: str
    first: list[float]  # seconds: the first job of a new user
    per_job: list[float]  # seconds: later jobs of the same user
    disk_first: list[int]  # bytes added by a first job (its base included)
    disk_job: list[int]  # bytes added by a later job
    status: float | None  # seconds of the first `git status` in a later job's workspace
    remove: list[float]
    new_commit: list[float] = field(default_factory=list)  # first job at a pulled commit
    new_status: list[float] = field(default_factory=list)  # its first `git status`
    stale: list[int] = field(default_factory=list)  # files git must read again there
    stale_later: int | None = None  # and in a later job's workspace


def main() -> None:
    args = _arguments()
    if os.geteuid() != 0:
        sys.exit("run as root: workspaces are chowned and mounted")
    files, size = args.files * args.scale, args.size_mb * args.scale * MB
    top = args.directory / f"bench-{secrets.token_hex(4)}"
    top.mkdir(mode=0o755)
    try:
        print(_run_all(top, files, size, args))
    finally:
        trees.remove_tree(top)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="where to build (on the filesystem)")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--scale", type=int, default=1, help="multiply files and size")
    parser.add_argument(
        "--strategy",
        action="append",
        choices=[strategy.value for strategy in CowStrategy if strategy is not CowStrategy.AUTO],
        help="measure only this strategy (repeat for several); default: all that work",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip worktree and cp")
    return parser.parse_args()


def _run_all(top: Path, files: int, size: int, args: argparse.Namespace) -> str:
    data_dir = top / "data"
    data_dir.mkdir(mode=0o755)
    upstream = top / "upstream"
    _log(f"building {files} files, {size // MB} MB")
    commit = build_repository(upstream, files, size)
    probe = WorkspaceEngine(data_dir, CowStrategy.AUTO)
    adopt, repo = _pull(probe, upstream, data_dir)
    stored = _allocated(repo)
    available = cast(dict[str, bool], probe.report()["available"])
    wanted = args.strategy or list(available)
    engines = [
        WorkspaceEngine(data_dir, CowStrategy(name))
        for name, works in available.items()
        if works and name in wanted
    ]
    rows = []
    for engine in engines:
        _log(f"strategy {engine.strategy_name}")
        rows.append(_measure_strategy(engine, data_dir, commit, args.reps, stored))
    _log("a pull: a new commit upstream, cloned and adopted")
    new = _advance(upstream, files)
    pull, _ = _pull(probe, upstream, data_dir)
    for engine, row in zip(engines, rows, strict=True):
        _log(f"strategy {engine.strategy_name} at the new commit")
        _measure_new_commit(engine, row, data_dir, new, args.reps, stored)
    if not args.no_peers:
        _log("peers")
        rows.append(_measure_peer("`git worktree add` + chown", _worktree(repo, new), top, args))
        rows.append(_measure_peer("`cp -a --reflink=never` + chown", _cp(repo), top, args))
    return _table(probe.report(), files, size, stored, (adopt, pull), rows)


def _pull(engine: WorkspaceEngine, upstream: Path, data_dir: Path) -> tuple[float, Path]:
    """Clone `upstream` as the repository service does and adopt the clone: the seconds the
    adoption took (the clone aside), and the stored tree."""
    staging = data_dir / "staging"
    _git(upstream, "clone", "--quiet", "--no-hardlinks", str(upstream), str(staging))
    started = time.perf_counter()
    repo = engine.adopt_repository(staging, "bench")
    return time.perf_counter() - started, repo


def build_repository(path: Path, files: int, size: int) -> str:
    """`files` files of `size` bytes in all (log-normal sizes) in nested folders, three
    commits (the later ones change 2% of the files each), packed like a fresh clone."""
    rng = random.Random(20_000)
    paths = [_path(rng, n) for n in range(files)]
    weights = [rng.lognormvariate(0, 1.5) for _ in range(files)]
    scale = size / sum(weights)
    path.mkdir()
    _git(path, "init", "--quiet", "--initial-branch=main")
    for number, (name, weight) in enumerate(zip(paths, weights, strict=True)):
        _write(path / name, max(1, int(weight * scale)))
        if number % 5000 == 0:
            _log(f"  {number} files")
    _git(path, "add", "-A")
    _git(path, "commit", "--quiet", "-m", "initial")
    for round_ in range(2):
        for name in rng.sample(paths, files // 50):
            _write(path / name, (path / name).stat().st_size)
        _git(path, "commit", "--quiet", "-am", f"change {round_ + 1}")
    _git(path, "repack", "-a", "-d", "-q")
    return _git(path, "rev-parse", "HEAD")


def _advance(path: Path, files: int) -> str:
    """A new commit on top of `path` that changes 2% of its files, as a pull brings."""
    rng = random.Random(files)
    tracked = _git(path, "ls-files").splitlines()
    for name in rng.sample(tracked, max(1, len(tracked) // 50)):
        _write(path / name, (path / name).stat().st_size)
    _git(path, "commit", "--quiet", "-am", "pulled")
    return _git(path, "rev-parse", "HEAD")


def _path(rng: random.Random, number: int) -> str:
    depth = rng.randint(1, 5)
    folders = [f"d{rng.randrange(6)}" for _ in range(depth)]
    return "/".join([*folders, f"f{number}.dat"])


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def _measure_strategy(
    engine: WorkspaceEngine, data_dir: Path, commit: str, reps: int, stored: int
) -> Row:
    row = Row(engine.strategy_name, [], [], [], [], None, [])
    # First jobs of new users (with their bases), then later jobs of the first user.
    runs = [(f"first{rep}", rep, row.first, row.disk_first) for rep in range(reps)]
    runs += [(f"job{rep}", 0, row.per_job, row.disk_job) for rep in range(reps)]
    kept = []
    for job, user, times, disk in runs:
        seconds, added = _timed(
            data_dir, engine.create_workspace, "bench", commit, job, _account(user)
        )
        times.append(seconds)
        disk.append(added)
        # git's first status in one workspace, the stat check in another: a status after
        # diff-files would find the overlay's inodes made already
        if job == "job0":
            row.status = _git_status(engine.workspace_path(job))
        if job == "job1":
            row.stale_later = _stale(engine.workspace_path(job), FIRST_UID)
        if added > stored // 4:  # a real copy: make room for the next one
            row.remove.append(_timed(data_dir, engine.remove_workspace, job)[0])
        else:
            kept.append(job)
    row.remove += [_timed(data_dir, engine.remove_workspace, job)[0] for job in kept]
    return row


def _measure_new_commit(
    engine: WorkspaceEngine, row: Row, data_dir: Path, commit: str, reps: int, stored: int
) -> None:
    """The first job of each user of `_measure_strategy` at the commit a pull brought, the
    first `git status` in its workspace, and the stat check in a second one."""
    for user in range(reps):
        account = _account(user)
        seconds, _ = _timed(
            data_dir, engine.create_workspace, "bench", commit, f"pulled{user}", account
        )
        row.new_commit.append(seconds)
        row.new_status.append(_git_status(engine.workspace_path(f"pulled{user}"), account.uid))
        engine.create_workspace("bench", commit, f"check{user}", account)
        row.stale.append(_stale(engine.workspace_path(f"check{user}"), account.uid))
        engine.remove_workspace(f"pulled{user}")
        engine.remove_workspace(f"check{user}")


def _measure_peer(
    name: str, make: Callable[[Path], None], top: Path, args: argparse.Namespace
) -> Row:
    """A peer makes a tree per job; only a real copy can run `git status` as the user
    (a worktree's git data stays in the root-only repository)."""
    row = Row(name, [], [], [], [], None, [])
    for rep in range(args.reps):
        target = top / f"peer{rep}"
        seconds, added = _timed(top, make, target)
        row.per_job.append(seconds)
        row.disk_job.append(added)
        if rep == 0 and (target / ".git").is_dir():
            row.status = _git_status(target)
        row.remove.append(_timed(top, trees.remove_tree, target)[0])
    return row


def _worktree(repo: Path, commit: str) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        subprocess.run(
            [*GIT, "-C", str(repo), "worktree", "add", "--quiet", "--detach", str(target), commit],
            check=True,
        )
        _chown(target)

    return make


def _cp(repo: Path) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        subprocess.run(["cp", "-a", "--reflink=never", str(repo), str(target)], check=True)
        _chown(target)

    return make


def _chown(target: Path) -> None:
    subprocess.run(["chown", "-R", f"{FIRST_UID}:{FIRST_UID}", str(target)], check=True)


def _timed(where: Path, action: Callable[..., object], *args: object) -> tuple[float, int]:
    """Seconds `action(*args)` takes, and the bytes the filesystem of `where` lost to it."""
    before = _free(where)
    started = time.perf_counter()
    action(*args)
    seconds = time.perf_counter() - started
    return seconds, before - _free(where)


def _free(where: Path) -> int:
    os.sync()
    st = os.statvfs(where)
    return st.f_bfree * st.f_frsize


def _git_status(workspace: Path, uid: int = FIRST_UID) -> float:
    """The first `git status` as the user: fast only if git's index matches the files."""
    started = time.perf_counter()
    _as_user(workspace, uid, "status", "--porcelain")
    return time.perf_counter() - started


def _stale(workspace: Path, uid: int) -> int:
    """How many files' stat data disagree with git's index (diff-files compares no bytes):
    each one git reads again on the first status."""
    return len(_as_user(workspace, uid, "diff-files", "--name-only").splitlines())


def _as_user(workspace: Path, uid: int, *args: str) -> bytes:
    return subprocess.run(
        ["git", *args],
        cwd=workspace,
        user=uid,
        group=uid,
        extra_groups=[],
        env=USER_ENV,
        capture_output=True,
        check=True,
    ).stdout


def _account(number: int) -> Account:
    uid = FIRST_UID + number
    return Account(f"bench{uid}", uid, uid, Path("/nonexistent"), "/bin/sh", (uid,), ())


def _allocated(tree: Path) -> int:
    total = 0
    for directory, dirs, files in os.walk(tree):
        for name in dirs + files:
            total += Path(directory, name).lstat().st_blocks * 512
    return total


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _table(
    report: dict[str, object],
    files: int,
    size: int,
    stored: int,
    adoptions: tuple[float, float],
    rows: list[Row],
) -> str:
    lines = [
        f"Filesystem {report['filesystem']} ({report['dataDir']}); auto picks "
        f"`{report['strategy']}`. Repository: {files} files, {size // MB} MB of content, "
        f"{stored / MB:.0f} MB stored with .git; adopted in {adoptions[0]:.2f} s, "
        f"a pull of a new commit (2% of the files changed) adopted in {adoptions[1]:.2f} s.",
        "",
        "| method | first job of a new user | first job at a new commit | later jobs "
        "| per-job range | disk, first job | disk per later job | first `git status`, "
        "first job at a new commit | files to re-read there | first `git status`, "
        "later job | files to re-read there | remove |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [_line(row, stored) for row in rows]
    return "\n".join(lines)


def _line(row: Row, stored: int) -> str:
    first = _median_ms(row.first)
    new_commit = _median_ms(row.new_commit)
    disk_first = _disk(int(statistics.median(row.disk_first)), stored) if row.disk_first else "-"
    spread = f"{_ms(min(row.per_job))} .. {_ms(max(row.per_job))}"
    status = _ms(row.status) if row.status is not None else "-"
    stale = f"{statistics.median(row.stale):.0f}" if row.stale else "-"
    stale_later = "-" if row.stale_later is None else str(row.stale_later)
    return (
        f"| {row.method} | {first} | {new_commit} | {_ms(statistics.median(row.per_job))} "
        f"| {spread} | {disk_first} | {_disk(int(statistics.median(row.disk_job)), stored)} "
        f"| {_median_ms(row.new_status)} | {stale} | {status} | {stale_later} "
        f"| {_ms(statistics.median(row.remove))} |"
    )


def _median_ms(seconds: list[float]) -> str:
    return _ms(statistics.median(seconds)) if seconds else "-"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _disk(added: int, stored: int) -> str:
    return f"{added / MB:.1f} MB ({100 * added / stored:.2f}%)"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

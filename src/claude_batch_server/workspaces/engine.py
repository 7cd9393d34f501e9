"""The workspace engine: the policy around the strategies (see the package docstring)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from claude_batch_server import servergit
from claude_batch_server.accounts import Account
from claude_batch_server.logs import log
from claude_batch_server.settings import CowStrategy
from claude_batch_server.workspaces import btrfs, linux, probe, registry, trees
from claude_batch_server.workspaces.base import Workspace, WorkspaceError
from claude_batch_server.workspaces.layout import (
    Layout,
    Record,
    checked_commit,
    checked_job,
    checked_repository,
)

if TYPE_CHECKING:
    from claude_batch_server.quotas import DiskQuotas

# The commit a stored tree is at. trusted.*: only root (CAP_SYS_ADMIN) reads or writes it,
# never a user, not even through a workspace made of the tree.
_HEAD_ATTRIBUTE: Final = "trusted.claude-batch-server.head"
_CLOCK_TICK: Final = 0.01  # seconds: more than the kernel's coarse clock lags behind


class WorkspaceEngine:
    """Stored repositories and per-job copy-on-write workspaces under `data_dir`.

    Every method blocks and is safe to call from several threads and processes at once:
    the state of each repository is guarded by a file lock, shared while workspaces are
    made, exclusive while the stored tree is swapped or unused trees are dropped."""

    def __init__(
        self,
        data_dir: Path,
        strategy: CowStrategy,
        quotas: DiskQuotas | None = None,
        shared: bool = False,
    ) -> None:
        """`shared`: jobs run on other hosts too (Slurm), which see DATA_DIR's directories
        but none of this host's mounts."""
        self._layout = Layout(data_dir)
        self._layout.prepare()
        self._sweep_scratch()
        self._own_stored_git_dirs()
        self._filesystem = linux.filesystem_type(data_dir)
        with self._scratch() as scratch:
            self._available = probe.available(scratch)
        where = f"{data_dir} ({self._filesystem})"
        self._strategy = registry.choose(strategy, self._available, where, shared)
        self.strategy_name: str = self._strategy.name
        self._quotas = quotas
        if quotas is not None:
            with self._scratch() as scratch:
                quotas.detect(scratch, self.strategy_name)

    def report(self) -> dict[str, object]:
        return {
            "dataDir": str(self._layout.data_dir),
            "filesystem": self._filesystem,
            "strategy": self.strategy_name,
            "available": dict(self._available),
            "quota": self._quotas.name if self._quotas is not None else "none: guard only",
        }

    # repositories

    def adopt_repository(self, staging: Path, name: str) -> Path:
        """Make the fresh clone `staging` (under DATA_DIR, nothing running in it any more)
        the stored repository `name`, replacing the current one in one atomic step."""
        target = self._layout.repository(name)
        self._check_staging(staging)
        with self._scratch() as scratch:
            tree = scratch / "tree"
            staging.rename(tree)  # out of its maker's reach before it is sealed
            trees.seal_tree(tree)
            if not (tree / ".git").is_dir() or (tree / ".git").is_symlink():
                raise WorkspaceError(f"not a git checkout: {staging}")
            servergit.own_git_dir(tree / ".git")  # its maker's configuration runs nowhere
            stored = self._store(tree, scratch / "stored")
            _record_head(stored)
            _await_next_second(stored / ".git" / "index")
            with self._lock(name, exclusive=True):
                if target.exists():
                    linux.exchange(stored, target)
                    self._retire(name, stored)  # `stored` now names the replaced tree
                else:
                    stored.rename(target)
        return target

    def remove_repository(self, name: str) -> None:
        """Drop the stored repository; workspaces made from it keep working."""
        target = self._layout.repository(name)
        with self._scratch() as scratch, self._lock(name, exclusive=True):
            if target.exists():
                target.rename(scratch / "old")
                self._retire(name, scratch / "old")

    # workspaces

    def create_workspace(self, repo_name: str, commit: str, job_id: str, owner: Account) -> Path:
        """The job's workspace: the repository (with `.git`) at `commit`, owned by `owner`.
        What an earlier, interrupted attempt for the same job left behind is removed first."""
        record = Record(
            checked_job(job_id),
            self.strategy_name,
            checked_repository(repo_name),
            checked_commit(commit),
            owner.uid,
            owner.gid,
        )
        self.remove_workspace(job_id)
        with self._lock(repo_name, exclusive=False):
            if not self._layout.repository(repo_name).exists():  # removed: no new workspaces
                raise WorkspaceError(f"repository {repo_name!r} is missing")
            workspace = self._workspace(record, self._source(repo_name, commit))
            workspace.state.mkdir(mode=0o700)
            record = self._write_first_record(record)  # a crash from here on leaves a trace
            try:
                self._strategy.create(workspace)
                if record.quota is not None:
                    assert self._quotas is not None
                    self._quotas.apply(record.quota, self._strategy.writable(workspace))
            except BaseException:
                self._remove_job_files(record.job_id, record.quota)
                raise
        return workspace.target

    def count_against_quota(self, job_id: str, directory: Path) -> None:
        """Puts the new, empty `directory` (the run's TMPDIR) under the disk quota of the
        job's workspace, if it has one."""
        if self._quotas is None or not self._quotas.active:  # no record read for nothing
            return
        record = self._layout.read_record(job_id)
        if record is not None and record.quota is not None:
            self._quotas.tag(record.quota, directory)

    def workspace_path(self, job_id: str) -> Path:
        return self._layout.workspace(job_id)

    @property
    def workspaces_root(self) -> Path:
        """Where every workspace lies: each job's user passes through it."""
        return self._layout.workspaces

    def source_of(self, job_id: str) -> Path | None:
        """The stored tree the job's workspace was made from, while it is still there."""
        record = self._layout.read_record(job_id)
        if record is None:
            return None
        try:
            return self._source(record.repository, record.commit)
        except WorkspaceError:
            return None

    def start_of(self, job_id: str) -> servergit.Start | None:
        """The job's start commit, in the stored git dir to read it from (the job cannot
        write it, unlike its workspace's): the kept tree at that commit if a pull replaced
        the stored one or it was removed, else the stored repository; None when neither is
        there (the workspace is gone)."""
        record = self._layout.read_record(job_id)
        if record is None:
            return None
        tree = self._layout.kept_tree(record.repository, record.commit)
        if not tree.exists():
            tree = self._layout.repository(record.repository)
        git_dir = tree / ".git"
        return servergit.Start(git_dir, record.commit) if git_dir.is_dir() else None

    def restore_workspace(self, job_id: str) -> None:
        """Make the job's workspace usable after a restart (remount an overlay)."""
        record = self._layout.read_record(job_id)
        if record is None or not self._layout.workspace(job_id).exists():
            raise WorkspaceError(f"job {job_id} has no workspace")
        strategy = registry.STRATEGIES[record.strategy]
        with self._lock(record.repository, exclusive=False):
            source = self._layout.repository(record.repository)
            if strategy.keeps_source:
                source = self._source(record.repository, record.commit)
            strategy.restore(self._workspace(record, source))

    def remove_workspace(self, job_id: str) -> None:
        """Remove the job's workspace if there is one, and what only it still used."""
        record = self._layout.read_record(job_id)
        if record is None:
            self._remove_job_files(job_id)
            return
        with self._lock(record.repository, exclusive=True):
            self._remove_job_files(job_id, record.quota)
            self._collect(record.repository)

    def collect(self) -> None:
        """Drop every base and kept tree that no workspace uses any more, and the leftovers
        of dead processes. `remove_workspace` does this for its own repository already."""
        self._sweep_scratch()
        shared = (self._layout.bases, self._layout.kept)
        for name in {path.name for top in shared for path in _dirs(top)}:
            with self._lock(name, exclusive=True):
                self._collect(name)

    # policy

    def _source(self, repository: str, commit: str) -> Path:
        """The stored tree at `commit`: a kept one, or the repository if it is there now."""
        kept = self._layout.kept_tree(repository, commit)
        if kept.exists():
            return kept
        stored = self._layout.repository(repository)
        head = _recorded_head(stored)
        if head != commit:
            found = f"at {head}" if head else "missing"
            raise WorkspaceError(f"repository {repository!r} is {found}, not at {commit}")
        return stored

    def _workspace(self, record: Record, source: Path) -> Workspace:
        return Workspace(
            source=source,
            base=self._layout.base(record.repository, record.commit, record.uid),
            target=self._layout.workspace(record.job_id),
            state=self._layout.job_state(record.job_id),
            uid=record.uid,
            gid=record.gid,
        )

    def _store(self, tree: Path, scratch: Path) -> Path:
        """The sealed tree as it is stored: on btrfs a subvolume, to be snapshotted."""
        if not self._available["btrfs"]:
            return tree
        btrfs.store(tree, scratch)
        return scratch

    def _retire(self, name: str, old: Path) -> None:
        """Keep a replaced or removed stored tree while a workspace made from it remains (an
        overlay reads it as its lower layer; every workspace's diff, patch and push read
        its start commit there, `start_of`); otherwise it stays in `old`, in the scratch
        area, to be deleted."""
        commit = _recorded_head(old)
        if commit is None or not self._started_at(name, commit):
            return
        kept = self._layout.kept_tree(name, commit)
        if not kept.exists():  # else the workspaces at `commit` read that one, not `old`
            kept.parent.mkdir(mode=0o700, exist_ok=True)
            old.rename(kept)

    def _started_at(self, name: str, commit: str) -> bool:
        return any(
            record.repository == name and record.commit == commit
            for record in self._layout.records()
        )

    def _collect(self, name: str) -> None:
        """Under the exclusive lock of `name`: drop its unused bases and kept trees."""
        used: set[Path] = set()
        for record in self._layout.records():
            if record.repository == name:
                used.add(self._layout.base(name, record.commit, record.uid))
                used.add(self._layout.kept_tree(name, record.commit))
        for top in (self._layout.bases / name, self._layout.kept / name):
            for path in _dirs(top):
                if path not in used:
                    trees.remove_tree(path)
            with contextlib.suppress(OSError):  # absent, or still in use
                top.rmdir()

    def _remove_job_files(self, job_id: str, quota: int | None = None) -> None:
        if quota is not None and self._quotas is not None:
            try:  # first: the key stays taken until the record is gone
                self._quotas.release(quota)
            except OSError as error:  # its next holder sets the limits anew
                log.warning("disk quota not released", job=job_id, error=str(error))
        trees.remove_tree(self._layout.workspace(job_id))
        trees.remove_tree(self._layout.job_state(job_id))  # the record goes last

    def _write_first_record(self, record: Record) -> Record:
        """Writes the record of a new workspace, with the key of its disk quota if quotas
        are on: chosen and written under one lock, so no two workspaces share a key."""
        if self._quotas is None:
            self._layout.write_record(record)
            return record
        fd = os.open(self._layout.quota_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            key = self._quotas.free_key(found.quota for found in self._layout.records())
            record = replace(record, quota=key)
            self._layout.write_record(record)
        finally:
            os.close(fd)
        return record

    def _check_staging(self, staging: Path) -> None:
        """A real directory under DATA_DIR (one filesystem: it is renamed, not copied),
        outside what the engine itself keeps there."""
        layout = self._layout
        real = staging.parent.resolve() / staging.name
        ours = (layout.repos, layout.workspaces, layout.state)
        if (
            not real.is_relative_to(layout.data_dir.resolve())
            or any(real.is_relative_to(path.resolve()) for path in ours)
            or staging.is_symlink()
            or not staging.is_dir()
        ):
            raise WorkspaceError(f"not a staging directory under {layout.data_dir}: {staging}")

    @contextmanager
    def _lock(self, name: str, *, exclusive: bool) -> Iterator[None]:
        # flock on a descriptor of our own: excludes other threads as well as processes
        path = self._layout.locks / checked_repository(name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        """A root-only directory on DATA_DIR's filesystem, deleted afterwards."""
        path = self._layout.scratch / f"{os.getpid()}-{secrets.token_hex(6)}"
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            trees.remove_tree(path)

    def _own_stored_git_dirs(self) -> None:
        """Trees stored before adoption rewrote their git dir still have their maker's
        configuration: made the server's own once, at start."""
        trees_ = [*_dirs(self._layout.repos)]
        trees_ += [tree for top in _dirs(self._layout.kept) for tree in _dirs(top)]
        for tree in trees_:
            git_dir = tree / ".git"
            if git_dir.is_dir() and not git_dir.is_symlink() and not servergit.is_own(git_dir):
                servergit.own_git_dir(git_dir)

    def _sweep_scratch(self) -> None:
        """Delete the scratch directories of processes that died before they could."""
        for path in _dirs(self._layout.scratch):
            pid = path.name.partition("-")[0]
            if not Path(f"/proc/{pid}").exists():
                trees.remove_tree(path)


def _dirs(top: Path) -> list[Path]:
    try:
        return [path for path in top.iterdir() if path.is_dir() and not path.is_symlink()]
    except FileNotFoundError:
        return []


def _await_next_second(index: Path) -> None:
    """git compares a file's mtime with its index in whole seconds (`servergit`): a change of
    the same size made in the second the clone wrote the file would go unseen. The index is
    written after every file it records, so once its second is over, no workspace made of
    the tree can write a file in the second recorded for it: usually long past already."""
    try:
        written = index.stat().st_mtime
    except OSError:  # no index: git has nothing to compare
        return
    # files take their times from the kernel's coarse clock, a tick behind time.time()
    delay = math.floor(written) + 1 + _CLOCK_TICK - time.time()
    if 0 < delay < 2:  # not for an index from the future: its maker set that time
        time.sleep(delay)


def _record_head(tree: Path) -> None:
    """Note the commit of a tree about to be stored (none: empty) in it, where only root
    can write and where it moves with the tree: read for every workspace, which then need
    not run git. Any note the tree came with is replaced."""
    note = (_head(tree) or "").encode()
    try:
        os.setxattr(tree, _HEAD_ATTRIBUTE, note, follow_symlinks=False)
    except OSError as error:
        # not supported, or trusted.* out of our reach (a container): git is asked instead
        if error.errno not in (errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
            raise


def _recorded_head(tree: Path) -> str | None:
    """The commit of a stored tree: as noted at adoption, else (a tree stored before notes
    were kept, or a filesystem without them) as git says."""
    try:
        return os.getxattr(tree, _HEAD_ATTRIBUTE, follow_symlinks=False).decode() or None
    except FileNotFoundError:
        return None
    except OSError:  # no note
        return _head(tree)


def _head(tree: Path) -> str | None:
    """The commit checked out in a stored tree, whose git dir is the server's own."""
    try:
        output = servergit.run(["rev-parse", "--verify", "--quiet", "HEAD"], git_dir=tree / ".git")
    except servergit.GitError:
        return None
    return output.decode().strip() or None

"""Register, pull, list and remove repositories.

A clone runs as the registering user in a staging folder of theirs under DATA_DIR, so
nobody registers what they cannot read; the finished tree is then handed to the workspace
engine, which moves it under DATA_DIR/repos, owned by the service and closed to users.
A pull clones again the same way and swaps the new tree in: jobs keep their workspaces.

Names are per user: each user has their own namespace, and nobody learns another's names.
Inside, a repository is its `id`, which files its trees in DATA_DIR and which jobs keep.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy import Connection, Select, delete, select
from sqlalchemy.exc import IntegrityError

from claude_batch_server.accounts import Account
from claude_batch_server.auth.service import User
from claude_batch_server.errors import Conflict, NotFound
from claude_batch_server.logs import log
from claude_batch_server.repositories import git
from claude_batch_server.repositories.validation import (
    NAME,
    check_branch,
    check_name,
    check_text,
    check_url,
)
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import Repository, utcnow
from claude_batch_server.workspaces.engine import WorkspaceEngine

EVERYONE = "*"  # as the owner asked for: every user's repositories (admins only)


def qualified(owner: str, name: str) -> str:
    """`owner/name`: a repository's name across users (a name holds no `/`), for audits."""
    return f"{owner}/{name}"


class RepoStatus(StrEnum):
    CLONING = "cloning"  # the first clone is under way
    READY = "ready"  # cloned; jobs may use it (a failed pull keeps it ready, with `error`)
    FAILED = "failed"  # the first clone failed; `error` says why


@dataclass(frozen=True)
class RegisterRequest:
    name: str
    git_url: str
    description: str
    branch: str | None


class RepositoryService:
    def __init__(
        self,
        database: Database,
        engine: WorkspaceEngine,
        data_dir: Path,
        lookup: Callable[[str], Account | None],
        active_jobs: Callable[[Connection, str], int],
    ) -> None:
        self._database = database
        self._engine = engine
        self._staging = data_dir / "staging"
        self._lookup = lookup
        self._active_jobs = active_jobs  # queued or running jobs of a repository, by its id
        self._pulling: set[str] = set()

    def visible(self, user: User, name: str, owner: str | None = None) -> Repository:
        """`owner`'s repository `name` (the caller's own when no owner is named), if `user`
        may see it: only admins name another owner. 404 otherwise, the same whether or not
        the owner or the repository exists."""
        owner = owner or user.name
        repo = None
        if (user.admin or owner == user.name) and NAME.fullmatch(name):  # else none can exist
            with self._database.read() as session:
                repo = session.scalars(
                    select(Repository).where(
                        Repository.registered_by == owner, Repository.name == name
                    )
                ).first()
        if repo is None:
            raise NotFound(f"repository {name!r} not found")
        return repo

    def all_visible(self, user: User, owner: str | None = None) -> list[Repository]:
        """`owner`'s repositories (the caller's own when no owner is named; every user's
        for `*`); only admins name another owner, else 404 as for `visible`."""
        owner = owner or user.name
        if not (user.admin or owner == user.name):
            raise NotFound(f"repositories of {owner!r} not found")
        query: Select[tuple[Repository]] = select(Repository)
        if owner != EVERYONE:
            query = query.where(Repository.registered_by == owner)
        with self._database.read() as session:
            return list(session.scalars(query.order_by(Repository.name, Repository.registered_by)))

    def register(self, user: User, request: RegisterRequest) -> Repository:
        """Records the repository as `cloning`; `clone` then does the work."""
        repo = Repository(
            id=uuid.uuid4().hex,  # unique, and safe as a path: what DATA_DIR files it under
            name=check_name(request.name),
            git_url=check_url(request.git_url),
            description=check_text("description", request.description),
            branch=check_branch(request.branch),
            status=RepoStatus.CLONING,
            registered_by=user.name,
            registered_at=utcnow(),
        )
        try:
            with self._database.session() as session:
                session.add(repo)
        except IntegrityError as error:  # the caller's own name: the only one it can meet
            raise Conflict(f"you have a repository {request.name!r} already") from error
        return repo

    def clone(self, repo_id: str) -> None:
        """Blocking: the first clone, as the registering user. Ends `ready` or `failed`."""
        self._fetch(repo_id, first=True)

    def start_pull(self, repo: Repository) -> None:
        if repo.status == RepoStatus.CLONING or repo.id in self._pulling:
            raise Conflict(f"repository {repo.name!r} is being cloned already")
        self._pulling.add(repo.id)

    def pull(self, repo_id: str) -> None:
        """Blocking: clone the branch's latest commit again and swap it in."""
        try:
            self._fetch(repo_id, first=False)
        finally:
            self._pulling.discard(repo_id)

    def remove(self, repo: Repository) -> None:
        """Unless a job of it is queued or running: the check and the delete are one
        transaction (on SQLite, writers take turns, so no start slips between them)."""
        with self._database.connection() as connection:
            active = self._active_jobs(connection, repo.id)
            if active:
                raise Conflict(f"repository {repo.name!r} has {active} queued or running jobs")
            connection.execute(delete(Repository).where(Repository.id == repo.id))
        self._engine.remove_repository(repo.id)

    def resume_interrupted(self) -> list[str]:
        """Ids of repositories whose first clone a stopped server left unfinished."""
        with self._database.read() as session:
            query = select(Repository.id).where(Repository.status == RepoStatus.CLONING)
            return list(session.scalars(query))

    def _fetch(self, repo_id: str, *, first: bool) -> None:
        with self._database.read() as session:
            repo = session.get(Repository, repo_id)
        if repo is None:
            return
        try:
            head, size = self._clone_and_adopt(repo)
        except (git.GitError, OSError) as error:
            where = qualified(repo.registered_by, repo.name)
            log.warning("clone failed", repository=where, error=str(error))
            failure: dict[str, object] = {"error": str(error)}
            if first:
                failure["status"] = RepoStatus.FAILED
            self._update(repo_id, **failure)
            return
        self._update(
            repo_id,
            status=RepoStatus.READY,
            error=None,
            commit=head.commit,
            branch=head.branch,
            size=size,
            last_pull=utcnow(),
        )

    def _clone_and_adopt(self, repo: Repository) -> tuple[git.Head, int]:
        account = self._lookup(repo.registered_by)
        if account is None:
            raise git.GitError(f"account {repo.registered_by!r} no longer exists")
        staging = self._staging_dir(account)
        try:
            tree = staging / "tree"
            git.clone(account, repo.git_url, repo.branch, tree)
            head = git.head(account, tree)
            size = tree_size(tree)
            self._engine.adopt_repository(tree, repo.id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return head, size

    def _staging_dir(self, account: Account) -> Path:
        self._staging.mkdir(exist_ok=True)
        self._staging.chmod(0o711)  # the user passes through to their own folder below
        staging = Path(tempfile.mkdtemp(prefix="clone-", dir=self._staging))
        os.chown(staging, account.uid, account.gid)
        return staging

    def _update(self, repo_id: str, **fields: object) -> None:
        with self._database.session() as session:
            repo = session.get(Repository, repo_id)
            if repo is None:
                return
            for field, value in fields.items():
                setattr(repo, field, value)


def tree_size(root: Path) -> int:
    """Bytes in the files under `root`, counted without following any link."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += (Path(directory) / name).lstat().st_size
            except OSError:
                continue
    return total

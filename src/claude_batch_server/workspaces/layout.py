"""Where the engine keeps things under DATA_DIR, and the record it keeps of each workspace."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from claude_batch_server.workspaces.base import WorkspaceError

_REPOSITORY_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_JOB_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_COMMIT: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
RECORD: Final = "record.json"


def checked_repository(name: str) -> str:
    """A stored repository's key, its id (a hex string, or the name of one registered while
    names were server-wide): unique across users, and a safe path component."""
    return _checked(_REPOSITORY_NAME, name, "repository name")


def checked_job(job_id: str) -> str:
    return _checked(_JOB_ID, job_id, "job id")


def checked_commit(commit: str) -> str:
    return _checked(_COMMIT, commit, "commit")


def _checked(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise WorkspaceError(f"invalid {what}: {value!r}")
    return value


@dataclass(frozen=True)
class Record:
    """What the engine remembers of a workspace, outside the tree the user can write."""

    job_id: str
    strategy: str
    repository: str
    commit: str
    uid: int
    gid: int
    quota: int | None = None  # the key of its disk quota (see `quotas`), if it has one


class Layout:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.repos = data_dir / "repos"
        self.workspaces = data_dir / "workspaces"
        self.state = data_dir / "cow"
        self.jobs = self.state / "jobs"
        self.bases = self.state / "bases"
        self.kept = self.state / "kept"
        self.locks = self.state / "locks"
        self.scratch = self.state / "tmp"
        self.quota_lock = self.locks / ".quotas"  # no repository's name starts with "."

    def prepare(self) -> None:
        # Users may pass through workspaces/ to their own workspace, never list it; the
        # rest is root's alone (a private repository must not be readable by others).
        for path, mode in (
            (self.repos, 0o700),
            (self.workspaces, 0o711),
            (self.state, 0o700),
            (self.jobs, 0o700),
            (self.bases, 0o700),
            (self.kept, 0o700),
            (self.locks, 0o700),
            (self.scratch, 0o700),
        ):
            path.mkdir(mode=mode, parents=True, exist_ok=True)
            path.chmod(mode)

    def repository(self, name: str) -> Path:
        return self.repos / checked_repository(name)

    def workspace(self, job_id: str) -> Path:
        return self.workspaces / checked_job(job_id)

    def job_state(self, job_id: str) -> Path:
        return self.jobs / checked_job(job_id)

    def base(self, repository: str, commit: str, uid: int) -> Path:
        return self.bases / repository / f"{commit}-{uid}"

    def kept_tree(self, repository: str, commit: str) -> Path:
        return self.kept / repository / commit

    def read_record(self, job_id: str) -> Record | None:
        return _load(self.job_state(job_id) / RECORD)

    def write_record(self, record: Record) -> None:
        path = self.job_state(record.job_id) / RECORD
        temporary = path.with_name(f".{RECORD}.tmp")
        temporary.write_text(json.dumps(asdict(record)))
        temporary.replace(path)

    def records(self) -> Iterator[Record]:
        for state in self.jobs.iterdir():
            record = _load(state / RECORD)
            if record is not None:
                yield record


def _load(path: Path) -> Record | None:
    try:
        return Record(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None

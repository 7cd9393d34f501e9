"""A job's files as its owner sees them: list a folder, stream a file (with ranges), read a
text file, and the diff against the commit the job started from."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio

from claude_batch_server.accounts import Account
from claude_batch_server.errors import (
    BadRequest,
    Conflict,
    NotFound,
    RangeNotSatisfiable,
    TooLarge,
    UnsupportedMedia,
)
from claude_batch_server.files import safe
from claude_batch_server.files.diffs import BoundedDiffs
from claude_batch_server.jobs.status import ENDED
from claude_batch_server.store.tables import Job
from claude_batch_server.workspaces.engine import WorkspaceEngine

CHUNK = 256 * 1024
MAX_CONTENT = 2 * 1024 * 1024  # bytes `content` returns; larger files are for `download`
MAX_ENTRIES = 10_000
SNIFF = 8192


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    type: str  # "file" | "directory"
    size: int
    modified: datetime


class OpenFile:
    """A file opened beneath a workspace; its bytes are read only as they are sent."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        self.fd, self.size, self.name = fd, size, name
        self._closed = False

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes start..end (inclusive), never more than the size it had when opened."""
        offset = start
        while offset <= end and not self._closed:
            data = os.pread(self.fd, min(CHUNK, end + 1 - offset), offset)
            if not data:
                return
            offset += len(data)
            yield data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)


class FileService:
    def __init__(
        self,
        workspaces: WorkspaceEngine,
        lookup: Callable[[str], Account | None],
        diffs: BoundedDiffs,
    ) -> None:
        self._workspaces = workspaces
        self._lookup = lookup
        self._diffs = diffs

    def _root(self, job: Job) -> Path:
        if job.commit is None:
            raise NotFound("the job has no workspace yet")
        if job.workspace_removed:
            raise NotFound("the job's workspace has been removed")
        return self._workspaces.workspace_path(job.id)

    def list(self, job: Job, relative: str) -> list[Entry]:
        """Regular files and folders of one folder; links, FIFOs, devices and names that
        are not UTF-8 are left out."""
        fd = safe.open_directory(self._root(job), relative)
        prefix = "/".join(safe.parts_of(relative))
        entries = []
        try:
            with os.scandir(fd) as scan:
                for item in scan:
                    entry = _entry(item, prefix)
                    if entry is not None:
                        entries.append(entry)
                    if len(entries) >= MAX_ENTRIES:
                        break
        finally:
            os.close(fd)
        return sorted(entries, key=lambda e: (e.type != "directory", e.name))

    def open(self, job: Job, relative: str) -> OpenFile:
        fd, info = safe.open_file(self._root(job), relative)
        return OpenFile(fd, info.st_size, safe.parts_of(relative)[-1])

    def content(self, job: Job, relative: str) -> tuple[str, int]:
        opened = self.open(job, relative)
        try:
            if opened.size > MAX_CONTENT:
                raise TooLarge(f"file is larger than {MAX_CONTENT} bytes; download it instead")
            data = b"".join(opened.chunks(0, opened.size - 1))
        finally:
            opened.close()
        if b"\0" in data[:SNIFF]:
            raise UnsupportedMedia("binary file; download it instead")
        try:
            return data.decode("utf-8"), len(data)
        except UnicodeDecodeError:
            raise UnsupportedMedia("not UTF-8 text; download it instead") from None

    async def diff(self, job: Job) -> bytes:
        """As the job's user: git never runs as root on a tree an agent wrote. Within
        bounds of its own (`diffs`), shared by parallel requests, kept once the job ended."""
        root = self._root(job)
        account = await anyio.to_thread.run_sync(self._lookup, job.user)
        if account is None:
            raise NotFound(f"account {job.user!r} no longer exists")
        start = await anyio.to_thread.run_sync(self._workspaces.start_of, job.id)
        if start is None:
            raise Conflict("the stored repository the job started from is gone")
        ended = job.status in ENDED
        version = f"{job.runs}:{job.completed_at}" if ended else None
        return await self._diffs.diff(job.id, version, account, root, start)


def _entry(item: os.DirEntry[str], prefix: str) -> Entry | None:
    try:
        item.name.encode("utf-8")
        info = item.stat(follow_symlinks=False)
    except (UnicodeEncodeError, OSError):
        return None
    if stat.S_ISDIR(info.st_mode):
        kind = "directory"
    elif stat.S_ISREG(info.st_mode):
        kind = "file"
    else:
        return None
    path = f"{prefix}/{item.name}" if prefix else item.name
    modified = datetime.fromtimestamp(info.st_mtime, UTC)
    return Entry(item.name, path, kind, info.st_size, modified)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range a `Range: bytes=…` header asks for, or None for the whole file."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None  # several ranges or another unit: the whole file, as RFC 9110 allows
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
    except ValueError:
        raise BadRequest("invalid Range header") from None
    if start > end or start >= size:
        raise RangeNotSatisfiable(f"range not satisfiable for {size} bytes")
    return start, end

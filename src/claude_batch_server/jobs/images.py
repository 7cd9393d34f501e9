"""Images attached to a job: checked by content, named safely, kept in DATA_DIR/uploads."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path, PurePosixPath

from claude_batch_server.errors import BadRequest

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGES = 20
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def media_type(head: bytes) -> str | None:
    """The image's media type from its first bytes, or None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def safe_name(filename: str | None, taken: set[str]) -> str:
    """A plain file name made from what the client sent: no folders, no leading dot,
    nothing but letters, digits, '.', '_' and '-'; unique among `taken`."""
    base = SAFE_NAME.sub("_", PurePosixPath((filename or "").replace("\\", "/")).name)
    base = base.lstrip(".")[:100] or "image"
    name, counter = base, 1
    while name in taken:
        stem, dot, suffix = base.rpartition(".")
        name = f"{stem}-{counter}.{suffix}" if dot else f"{base}-{counter}"
        counter += 1
    return name


class ImageStore:
    def __init__(self, uploads: Path) -> None:
        self._uploads = uploads

    def folder(self, job_id: str) -> Path:
        return self._uploads / job_id

    def save(self, job_id: str, name: str, data: bytes) -> None:
        if len(data) > MAX_IMAGE_BYTES:
            raise BadRequest(f"{name}: larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
        if media_type(data[:16]) is None:
            raise BadRequest(f"{name}: not a PNG, JPEG, GIF or WebP image")
        folder = self.folder(job_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(folder / name, flags, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)

    def read(self, job_id: str, name: str) -> bytes:
        fd = os.open(self.folder(job_id) / name, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as file:
            return file.read(MAX_IMAGE_BYTES + 1)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

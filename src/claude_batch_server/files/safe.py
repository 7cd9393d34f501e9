"""Opening paths beneath a root that an untrusted agent writes: every component is opened
relative to its parent with O_NOFOLLOW, so no symlink, however placed or swapped in,
leads outside the root."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk(root: Path, parts: list[str], *, create: bool, owner: tuple[int, int] | None) -> int:
    """A directory fd for root/parts[0]/…, each opened without following links."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part or "\0" in part:
                raise PermissionError(f"refused path component {part!r}")
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
                if owner is not None:
                    os.chown(part, *owner, dir_fd=fd, follow_symlinks=False)
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_beneath(
    root: Path, relative: str, data: bytes, owner: tuple[int, int], *, append: bool = False
) -> None:
    """Writes root/relative as `owner`'s file, making folders on the way; never follows links."""
    *folders, name = relative.split("/")
    directory = _walk(root, folders, create=True, owner=owner)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_APPEND if append else os.O_TRUNC
        fd = os.open(name, flags, 0o600, dir_fd=directory)
    finally:
        os.close(directory)
    with os.fdopen(fd, "ab" if append else "wb") as file:
        os.fchown(file.fileno(), *owner)
        file.write(data)

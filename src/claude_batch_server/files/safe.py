"""Opening paths beneath a root that an untrusted agent writes.

Every component is opened relative to its parent with O_NOFOLLOW, so no symlink, however
placed or swapped in while we look, leads outside the root; only regular files with a
single link are read (a hardlink would bring in bytes from elsewhere), and opening never
waits on a FIFO or a device.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from claude_batch_server.errors import NotFound

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
MAX_NAME = 255


def parts_of(relative: str) -> list[str]:
    """The components of a user's relative path. Whatever could leave the root (an absolute
    path, '..', a NUL) is answered 404, as for any name the workspace does not hold."""
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    too_long = any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME for part in parts)
    if relative.startswith("/") or ".." in parts or "\0" in relative or too_long:
        raise NotFound("no such file or directory in the workspace")
    return parts


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


def open_directory(root: Path, relative: str) -> int:
    """A directory fd beneath `root`; 404 for what is missing or not a real directory."""
    try:
        return _walk(root, parts_of(relative), create=False, owner=None)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
        raise NotFound("no such directory") from error
    except OSError as error:  # ELOOP: a symlink where a directory was expected
        raise NotFound("no such directory") from error


def open_file(root: Path, relative: str) -> tuple[int, os.stat_result]:
    """A regular file beneath `root`, opened for reading, and its stat."""
    parts = parts_of(relative)
    if not parts:
        raise NotFound("path names the workspace itself, not a file")
    directory = open_directory(root, "/".join(parts[:-1]))
    try:
        fd = os.open(parts[-1], READ_FLAGS, dir_fd=directory)
    except OSError as error:
        raise NotFound("no such file") from error
    finally:
        os.close(directory)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise NotFound("not a regular file")
    os.set_blocking(fd, True)
    return fd, info


def write_beneath(
    root: Path, relative: str, data: bytes, owner: tuple[int, int], *, append: bool = False
) -> None:
    """Writes root/relative as `owner`'s file, making folders on the way; never follows links."""
    *folders, name = relative.split("/")
    directory = _walk(root, folders, create=True, owner=owner)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        flags |= os.O_APPEND if append else os.O_TRUNC
        fd = os.open(name, flags, 0o600, dir_fd=directory)
    finally:
        os.close(directory)
    with os.fdopen(fd, "ab" if append else "wb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise PermissionError(f"{relative} is not a regular file")
        os.fchown(file.fileno(), *owner)
        file.write(data)

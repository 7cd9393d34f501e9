"""Whole-tree work: copy, chown, seal, remove. Every step goes through directory descriptors
opened with O_NOFOLLOW, so a symlink -- or a directory swapped for one while we work --
never leads outside the tree. Only regular files, directories and symlinks are copied:
nothing else is part of a git checkout."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from claude_batch_server.workspaces import linux
from claude_batch_server.workspaces.linux import BTRFS_SUBVOLUME_INO, opened

CopyData = Callable[[int, int], None]  # (source fd, target fd): fill the target's bytes

_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# The engine's own directory above what it removes may be reached through a symlink.
_PARENT_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# What a stored repository may not keep: write access for others, set-id and sticky bits.
_SEALED_OFF: Final = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH


def copy_data(source_fd: int, target_fd: int) -> None:
    """A real copy of the bytes. sendfile, not copy_file_range: the latter may share extents
    on XFS and btrfs, and the copy strategy promises blocks of its own."""
    size = os.fstat(source_fd).st_size
    offset = 0
    while offset < size:
        sent = os.sendfile(target_fd, source_fd, offset, size - offset)
        if sent == 0:  # the file shrank under us
            break
        offset += sent


def clone_or_copy(source_fd: int, target_fd: int) -> None:
    try:
        linux.ficlone(source_fd, target_fd)
    except OSError:
        copy_data(source_fd, target_fd)


def clone_tree(source: Path, target: Path, uid: int, gid: int, copy: CopyData) -> None:
    """Fill the empty directory `target` with `source`'s tree, every entry owned by uid:gid,
    modes and modification times kept; `target` itself gets the mode of `source`."""
    with opened(source) as source_fd, opened(target) as target_fd:
        _clone_dir(source_fd, target_fd, (uid, gid), copy)
        _settle(target_fd, os.fstat(source_fd), (uid, gid))


def _clone_dir(source_fd: int, target_fd: int, owner: tuple[int, int], copy: CopyData) -> None:
    for entry in _entries(source_fd):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            _clone_subdir(source_fd, target_fd, entry.name, st, owner, copy)
        elif stat.S_ISREG(st.st_mode):
            _clone_file(source_fd, target_fd, entry.name, st, owner, copy)
        elif stat.S_ISLNK(st.st_mode):
            _clone_link(source_fd, target_fd, entry.name, st, owner)


def _clone_subdir(
    source_fd: int,
    target_fd: int,
    name: str,
    st: os.stat_result,
    owner: tuple[int, int],
    copy: CopyData,
) -> None:
    os.mkdir(name, 0o700, dir_fd=target_fd)
    with opened(name, dir_fd=source_fd) as source, opened(name, dir_fd=target_fd) as target:
        _clone_dir(source, target, owner, copy)
        _settle(target, st, owner)


def _clone_file(
    source_fd: int,
    target_fd: int,
    name: str,
    st: os.stat_result,
    owner: tuple[int, int],
    copy: CopyData,
) -> None:
    with (
        opened(name, _FILE_FLAGS, source_fd) as source,
        opened(name, _NEW_FILE_FLAGS, target_fd) as target,
    ):
        copy(source, target)
        _settle(target, st, owner)


def _clone_link(
    source_fd: int, target_fd: int, name: str, st: os.stat_result, owner: tuple[int, int]
) -> None:
    os.symlink(os.readlink(name, dir_fd=source_fd), name, dir_fd=target_fd)
    os.chown(name, *owner, dir_fd=target_fd, follow_symlinks=False)
    times = (st.st_atime_ns, st.st_mtime_ns)
    os.utime(name, ns=times, dir_fd=target_fd, follow_symlinks=False)


def _settle(fd: int, st: os.stat_result, owner: tuple[int, int]) -> None:
    os.fchown(fd, *owner)  # before the mode: a chown clears set-id bits
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give every entry of the tree, `root` included, to uid:gid."""
    with opened(root) as root_fd:
        for parent, name, _ in walk(root_fd):
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        os.fchown(root_fd, uid, gid)


def seal_tree(root: Path) -> None:
    """Make a tree someone else wrote fit to be stored: owned by root, writable by root
    alone, no set-id bits, no special files, no hard link to a file outside it (a local
    `git clone` hard-links objects of the source repository, which must stay untouched),
    and no `.git` below its top: a clone checks none out, and one planted there would be a
    repository whose configuration its maker wrote."""
    with opened(root) as root_fd:
        for parent, name, st in walk(root_fd):
            if name == ".git" and parent != root_fd:
                _remove_entry(parent, name, st)
            else:
                _seal(parent, name, st)
        _seal_open(root_fd)


def _remove_entry(parent: int, name: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        _remove_dir(parent, name)
    else:
        os.unlink(name, dir_fd=parent)


def _seal(parent: int, name: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        os.chown(name, 0, 0, dir_fd=parent, follow_symlinks=False)
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        os.unlink(name, dir_fd=parent)
        return
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        _unshare_file(parent, name, st)
    with opened(name, _FILE_FLAGS, parent) as fd:
        _seal_open(fd)


def _seal_open(fd: int) -> None:
    os.fchown(fd, 0, 0)
    os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~_SEALED_OFF)


def _unshare_file(parent: int, name: str, st: os.stat_result) -> None:
    """Replace a hard-linked file by a file of its own with the same bytes."""
    temporary = f".unshare-{secrets.token_hex(8)}"
    with (
        opened(name, _FILE_FLAGS, parent) as source,
        opened(temporary, _NEW_FILE_FLAGS, parent) as target,
    ):
        clone_or_copy(source, target)
        os.fchmod(target, stat.S_IMODE(st.st_mode))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)


def walk(root_fd: int) -> Iterator[tuple[int, str, os.stat_result]]:
    """Every entry beneath the directory `root_fd` as (parent fd, name, lstat result);
    a directory comes after its contents."""
    for entry in _entries(root_fd):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            with opened(entry.name, dir_fd=root_fd) as child:
                yield from walk(child)
        yield root_fd, entry.name, st


def _entries(fd: int) -> list[os.DirEntry[str]]:
    with os.scandir(fd) as entries:
        return list(entries)


def remove_tree(path: Path) -> None:
    """Remove `path` and all beneath it, if it exists: mounts beneath are detached first,
    btrfs subvolumes deleted whole, read-only entries too, and symlinks are removed, never
    followed."""
    if not _present(path):
        return
    for point in linux.mounts_beneath(path):
        linux.unmount(point)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    with opened(path.parent, _PARENT_FLAGS) as parent:
        if stat.S_ISDIR(st.st_mode):
            _remove_dir(parent, path.name)
        else:
            os.unlink(path.name, dir_fd=parent)


def _present(path: Path) -> bool:
    """Whether `path` exists, the mount table unread: were it missing, nothing could be
    mounted beneath it -- a mount point cannot be removed, a renamed parent takes its mounts
    along, and one hidden by a mount over a parent umount2 could not reach by path."""
    try:
        path.lstat()
    except FileNotFoundError:
        return False
    except OSError:  # a dead mount, say: what follows detaches it first
        return True
    return True


def _remove_dir(parent: int, name: str) -> None:
    if _destroy_subvolume(parent, name):
        return
    with opened(name, dir_fd=parent) as fd:
        for entry in _entries(fd):
            if entry.is_dir(follow_symlinks=False):
                _remove_dir(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    os.rmdir(name, dir_fd=parent)


def _destroy_subvolume(parent: int, name: str) -> bool:
    """Delete `name` in one step if it is a btrfs subvolume without nested ones."""
    if os.stat(name, dir_fd=parent, follow_symlinks=False).st_ino != BTRFS_SUBVOLUME_INO:
        return False
    try:
        linux.destroy_subvolume(parent, name)
    except OSError:  # not btrfs at all (ENOTTY), or nested subvolumes (ENOTEMPTY)
        return False
    return True

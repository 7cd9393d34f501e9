"""The Linux calls the strategies need that Python's `os` lacks: mounts, the mount table,
`renameat2`, and the FICLONE and btrfs subvolume ioctls. Mechanism only, no policy."""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_libc = ctypes.CDLL(None, use_errno=True)

AT_FDCWD: Final = -100
RENAME_EXCHANGE: Final = 2
MS_NOSUID: Final = 0x2
MS_NODEV: Final = 0x4
MNT_DETACH: Final = 0x2
MS_REC: Final = 0x4000
MS_SLAVE: Final = 0x80000
CLONE_NEWNS: Final = 0x20000

FICLONE: Final = 0x40049409  # _IOW(0x94, 9, int)
# _IOW(0x94, nr, 4096): btrfs_ioctl_vol_args and btrfs_ioctl_vol_args_v2 are both 4096 bytes.
_BTRFS_IOC_SUBVOL_CREATE: Final = 0x5000940E
_BTRFS_IOC_SNAP_DESTROY: Final = 0x5000940F
_BTRFS_IOC_SNAP_CREATE_V2: Final = 0x50009417
_BTRFS_VOL_ARGS_SIZE: Final = 4096
BTRFS_SUBVOLUME_INO: Final = 256  # the inode number of every subvolume's root directory

DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check(result: int, call: str, path: object = None) -> int:
    """`result` of a libc call, or the OSError its errno describes."""
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{call}: {os.strerror(error)}", None if path is None else str(path))
    return result


def syscall(number: int, *args: object) -> int:
    """A raw system call; pass every argument as a sized ctypes value (the call is variadic)."""
    return int(_libc.syscall(ctypes.c_long(number), *args))


@contextmanager
def opened(
    path: Path | str, flags: int = DIR_FLAGS, dir_fd: int | None = None, mode: int = 0o600
) -> Iterator[int]:
    fd = os.open(path, flags, mode, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def exchange(first: Path, second: Path) -> None:
    """Swap two paths in one atomic step (renameat2 RENAME_EXCHANGE)."""
    result = _libc.renameat2(
        AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE
    )
    check(result, "renameat2", second)


def mount(source: str, target: Path, fstype: str, flags: int, data: str) -> None:
    result = _libc.mount(
        source.encode(), os.fsencode(target), fstype.encode(), flags, data.encode()
    )
    check(result, "mount", target)


def unmount(target: Path, flags: int = MNT_DETACH) -> None:
    check(_libc.umount2(os.fsencode(target), flags), "umount2", target)


def unshare_mounts() -> None:
    """Move the calling thread, and only it, into a new mount namespace: a copy of the
    current one, whose shared mounts still propagate both ways until made slaves."""
    check(_libc.unshare(CLONE_NEWNS), "unshare")


def receive_mounts_only(target: str = "/") -> None:
    """Mounts beneath `target` receive what their peers mount, and send nothing back."""
    check(_libc.mount(b"none", target.encode(), None, MS_REC | MS_SLAVE, None), "mount", target)


@dataclass(frozen=True)
class Mount:
    point: Path
    fstype: str
    options: frozenset[str] = frozenset()  # the filesystem's own (super) options


def mounts() -> list[Mount]:
    """This process's mount table, in mount order."""
    table = []
    for line in _mountinfo():
        fields, _, rest = line.partition(" - ")
        fstype, _, options = [*rest.split(), "", ""][:3]
        point = Path(_unescape(fields.split()[4]))
        table.append(Mount(point, fstype, frozenset(options.split(","))))
    return table


def _mountinfo() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as table:
        return table.read().splitlines()


def _mount_points() -> list[str]:
    """The mount points of `mounts()` alone, as strings: the table has a line per overlay
    workspace, and this is read on every removal."""
    return [_unescape(line.split(" ", 5)[4]) for line in _mountinfo()]


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field)


def mounts_beneath(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest (and latest) first: the order to unmount."""
    real = str(path.parent.resolve() / path.name)  # the table holds real paths; never follow
    prefix = real.rstrip("/") + "/"
    beneath = [
        Path(point)
        for point in reversed(_mount_points())
        if point == real or point.startswith(prefix)
    ]
    return sorted(beneath, key=lambda point: len(point.parts), reverse=True)


def is_mount_point(path: Path) -> bool:
    return str(path.parent.resolve() / path.name) in _mount_points()


def filesystem_type(path: Path) -> str:
    """The type of the filesystem `path` lives on, as the mount table names it."""
    return mount_of(path).fstype


def mount_of(path: Path) -> Mount:
    """The mount that `path` lives on."""
    path = path.resolve()
    holding = [m for m in mounts() if m.point == path or m.point in path.parents]
    # the deepest mount point wins; of mounts stacked on one point, the latest
    return max(reversed(holding), key=lambda m: len(m.point.parts))


def ficlone(source_fd: int, target_fd: int) -> None:
    """Make the target file share the source's extents (a reflink); fails where unsupported."""
    fcntl.ioctl(target_fd, FICLONE, source_fd)


def create_subvolume(path: Path) -> None:
    with opened(path.parent) as parent:
        fcntl.ioctl(parent, _BTRFS_IOC_SUBVOL_CREATE, _vol_args(0, path.name))


def snapshot(source: Path, target: Path) -> None:
    """A writable snapshot of the subvolume `source` at `target`, in constant time."""
    with opened(source) as source_fd, opened(target.parent) as parent:
        name = os.fsencode(target.name)
        # btrfs_ioctl_vol_args_v2: fd, transid, flags, 32 bytes of union, then the name
        args = bytearray(struct.pack("=qQQ32x", source_fd, 0, 0) + name)
        args.extend(bytes(_BTRFS_VOL_ARGS_SIZE - len(args)))
        fcntl.ioctl(parent, _BTRFS_IOC_SNAP_CREATE_V2, args)


def destroy_subvolume(parent_fd: int, name: str) -> None:
    """Delete a whole subvolume at once; ENOTEMPTY while it holds nested subvolumes."""
    fcntl.ioctl(parent_fd, _BTRFS_IOC_SNAP_DESTROY, _vol_args(0, name))


def _vol_args(fd: int, name: str) -> bytearray:
    # a mutable buffer: fcntl.ioctl copies immutable ones into a 1024-byte scratch area
    args = bytearray(struct.pack("=q", fd) + os.fsencode(name))
    args.extend(bytes(_BTRFS_VOL_ARGS_SIZE - len(args)))
    return args

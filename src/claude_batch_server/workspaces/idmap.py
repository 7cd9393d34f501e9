"""Idmapped mounts: a view of a root-owned tree in which every file appears owned by one user.

The kernel maps ownership per mount (Linux 5.12+; overlayfs accepts such a mount as a layer
from 5.19). util-linux here is too old for `mount -o X-mount.idmap` (2.39+), so this uses the
syscalls directly: `open_tree` clones the source as a detached mount, `mount_setattr` gives it
the mapping of a user namespace, `move_mount` attaches it.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from claude_batch_server.workspaces.linux import AT_FDCWD, check, syscall

# Syscalls numbered from 424 up have the same number on every architecture.
_SYS_OPEN_TREE: Final = 428
_SYS_MOVE_MOUNT: Final = 429
_SYS_MOUNT_SETATTR: Final = 442
_OPEN_TREE_CLONE: Final = 1
_AT_EMPTY_PATH: Final = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH: Final = 0x4
_MOUNT_ATTR_RDONLY: Final = 0x1
_MOUNT_ATTR_NOSUID: Final = 0x2
_MOUNT_ATTR_NODEV: Final = 0x4
_MOUNT_ATTR_IDMAP: Final = 0x100000
_UNSHARE_TIMEOUT: Final = 5.0

_namespaces: dict[tuple[int, int], int] = {}  # (uid, gid): a user namespace descriptor
_namespaces_lock = threading.Lock()


class _MountAttr(ctypes.Structure):
    _fields_ = [  # the layout of struct mount_attr
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


@contextmanager
def owned_tree(source: Path, uid: int, gid: int) -> Iterator[int]:
    """A descriptor of a detached, read-only view of `source` in which what root owns
    appears owned by uid:gid (other owners appear as the overflow id, so `source` should
    be root's alone). Mount it with `attach`, or hand it to a mount as /proc/self/fd/N."""
    userns = _user_namespace(uid, gid)
    with _detached_tree(source) as tree:
        flags = _MOUNT_ATTR_IDMAP | _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV
        attr = _MountAttr(flags, 0, 0, userns)
        result = syscall(
            _SYS_MOUNT_SETATTR,
            ctypes.c_int(tree),
            b"",
            ctypes.c_uint(_AT_EMPTY_PATH),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        )
        check(result, "mount_setattr", source)
        yield tree


def attach(tree: int, target: Path) -> None:
    """Mount the detached tree `tree` at `target`."""
    result = syscall(
        _SYS_MOVE_MOUNT,
        ctypes.c_int(tree),
        b"",
        ctypes.c_int(AT_FDCWD),
        os.fsencode(target),
        ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH),
    )
    check(result, "move_mount", target)


@contextmanager
def _detached_tree(source: Path) -> Iterator[int]:
    flags = ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC)
    fd = check(
        syscall(_SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), os.fsencode(source), flags),
        "open_tree",
        source,
    )
    try:
        yield fd
    finally:
        os.close(fd)


def _user_namespace(uid: int, gid: int) -> int:
    """A descriptor of a user namespace whose root is uid:gid outside it: the mapping an
    idmapped mount is given. Made once per uid:gid and kept open for the life of the
    process -- making one costs a helper process, and the descriptor keeps the namespace
    alive after the helper is gone. The mapping is by number, so an id given to another
    account later still maps to whoever holds that number, as every file owner does."""
    with _namespaces_lock:
        fd = _namespaces.get((uid, gid))
    if fd is not None:
        return fd
    fd = _new_user_namespace(uid, gid)  # unlocked: another user's first job need not wait
    with _namespaces_lock:
        kept = _namespaces.setdefault((uid, gid), fd)
    if kept != fd:  # another thread made one first
        os.close(fd)
    return kept


def _new_user_namespace(uid: int, gid: int) -> int:
    """A helper process makes the namespace, because a threaded server cannot safely fork
    to unshare itself; root writes the maps from outside."""
    helper = subprocess.Popen(["unshare", "--user", "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        _await_unshare(helper)
        Path(f"/proc/{helper.pid}/uid_map").write_text(f"0 {uid} 1\n")
        Path(f"/proc/{helper.pid}/gid_map").write_text(f"0 {gid} 1\n")
        return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        helper.kill()
        helper.wait()


def _await_unshare(helper: subprocess.Popen[bytes]) -> None:
    ours = Path("/proc/self/ns/user").readlink()
    deadline = time.monotonic() + _UNSHARE_TIMEOUT
    while Path(f"/proc/{helper.pid}/ns/user").readlink() == ours:
        if helper.poll() is not None or time.monotonic() > deadline:
            raise OSError(f"unshare --user did not start (exit status {helper.returncode})")
        time.sleep(0.0005)

"""What a job may not ask of the kernel: ways out of its disk quota (quotas/).

Its user may make a btrfs subvolume or snapshot anywhere it can write, and the new
subvolume has a quota group of its own, outside the workspace's limit; and a file's owner
may set its XFS/ext4 project id (FS_IOC_FSSETXATTR, or since Linux 6.17 the same fields by
path with file_setattr), taking it out of the job's project. So the job's first process,
while still root (no no_new_privs needed), installs a seccomp filter, inherited by every
process of the job, that answers EPERM to those ioctls and to file_setattr, and lets every
other call through. Only the spawner's forked child imports this module: the
standard library alone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
RET_ALLOW = 0x7FFF0000
RET_EPERM = 0x00050000 | errno.EPERM
X32_BIT = 0x40000000  # x86-64's x32 calls: another number for ioctl, refused whole
FILE_SETATTR = 469  # the same number on every architecture, refused whole

# (audit arch, ioctl's number there): x86-64, i386 (also as x86-64's compat), AArch64, ARM
ARCHES = ((0xC000003E, 16), (0x40000003, 54), (0xC00000B7, 29), (0x40000028, 54))
DENIED = (
    0x50009401,  # BTRFS_IOC_SNAP_CREATE
    0x5000940E,  # BTRFS_IOC_SUBVOL_CREATE
    0x50009417,  # BTRFS_IOC_SNAP_CREATE_V2
    0x50009418,  # BTRFS_IOC_SUBVOL_CREATE_V2
    0x401C5820,  # FS_IOC_FSSETXATTR: the project id (and the flags beside it)
)

_LD_ABS, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06  # classic BPF: ld w abs, jeq/jge k, ret k
_NR, _ARCH, _CMD = 0, 4, 24  # offsets in struct seccomp_data: args[1]'s low word is the cmd


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


Jump = int | str  # a jump's target: 0 (the next instruction) or a label


def program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k): the call's arch names the ioctl's number; that
    call with a denied command gets EPERM (so do file_setattr and x32 calls); all else is
    allowed."""
    source: list[tuple[str, int, Jump, Jump, int]] = [("", _LD_ABS, 0, 0, _ARCH)]
    for index, (arch, ioctl) in enumerate(ARCHES):
        source.append(("", _JEQ, 0, f"arch{index + 1}", arch))
        source.append(("", _LD_ABS, 0, 0, _NR))
        if index == 0:
            source.append(("", _JGE, "eperm", 0, X32_BIT))
        source.append(("", _JEQ, "eperm", 0, FILE_SETATTR))
        source.append(("", _JEQ, "check", "allow", ioctl))
        source.append(
            (f"arch{index + 1}", _RET, 0, 0, RET_ALLOW)
            if index == len(ARCHES) - 1
            else (f"arch{index + 1}", _LD_ABS, 0, 0, _ARCH)
        )
    source.append(("allow", _RET, 0, 0, RET_ALLOW))
    source.append(("check", _LD_ABS, 0, 0, _CMD))
    source += [("", _JEQ, "eperm", 0, command) for command in DENIED]
    source.append(("", _RET, 0, 0, RET_ALLOW))
    source.append(("eperm", _RET, 0, 0, RET_EPERM))
    labels = {label: at for at, (label, *_) in enumerate(source) if label}

    def offset(target: Jump, at: int) -> int:
        return target if isinstance(target, int) else labels[target] - at - 1

    return [
        (code, offset(jt, at), offset(jf, at), k) for at, (_, code, jt, jf, k) in enumerate(source)
    ]


def deny_quota_escapes() -> None:
    """In the job's first process, before it drops root: the filter on this process and
    all it starts. Raises OSError if the kernel refuses it."""
    code = program()
    raw = b"".join(struct.pack("=HBBI", *instruction) for instruction in code)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    prog = _Program(len(code), ctypes.cast(buffer, ctypes.c_char_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        code_ = ctypes.get_errno()
        raise OSError(code_, os.strerror(code_))

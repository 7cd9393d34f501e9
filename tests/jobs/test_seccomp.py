"""The job's seccomp filter (jobs/seccomp.py) on its own: in a process that installed it,
the ioctls that would take files out of a quota answer EPERM, and the rest still work."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from claude_batch_server.jobs import seccomp

FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820


def _set_same_attributes(folder: Path) -> int:
    """Sets a folder's attributes to what they are; 0, or the errno it got."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        attributes = fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(28))
        fcntl.ioctl(fd, FS_IOC_FSSETXATTR, attributes)
        return 0
    except OSError as error:
        return error.errno or -1
    finally:
        os.close(fd)


def _in_child(folder: Path, filtered: bool) -> int:
    """What the set answers in a forked process, with the filter installed or not."""
    pid = os.fork()
    if pid == 0:
        try:
            if filtered:
                seccomp.deny_quota_escapes()
            os._exit(_set_same_attributes(folder))
        finally:
            os._exit(255)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_the_filter_refuses_setting_a_project_and_allows_reading_it(tmp_path: Path) -> None:
    if _in_child(tmp_path, filtered=False) != 0:
        pytest.skip("this filesystem takes no FS_IOC_FSSETXATTR at all")
    assert _in_child(tmp_path, filtered=True) == errno.EPERM


def test_every_jump_of_the_filter_lands_inside_it() -> None:
    code = seccomp.program()
    for at, (op, jt, jf, _) in enumerate(code):
        if op in (0x15, 0x35):  # the conditional jumps
            assert at + 1 + max(jt, jf) < len(code)
    assert code[-1][3] == seccomp.RET_EPERM and code[-2][3] == seccomp.RET_ALLOW

"""Project quotas, XFS's and ext4's: every file carries a project id, and the filesystem
limits the blocks and inodes of each id, whoever owns the files. A job's key is such an
id: set on the directories of its workspace's writable layer and its TMPDIR with the
PROJINHERIT flag, so that what the job makes beneath them is counted too, wherever it
moves it inside them (a rename into such a directory from another id fails with EXDEV,
which tools answer with a copy).

The id is set through an open descriptor (the FS_IOC_FSSETXATTR ioctl), never a path, so
no link a job made is followed; the limits are set by xfsprogs' `xfs_quota`, whose command
line holds numbers and the mount point of DATA_DIR only. Needs the filesystem mounted
with `prjquota` (ext4: also made with `-O quota,project`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path
from typing import Final

from claude_batch_server.quotas.base import refused
from claude_batch_server.workspaces import linux

# struct fsxattr: xflags, extsize, nextents, projid, cowextsize, 8 bytes of padding
_FSXATTR: Final = "=5I8x"
_FS_IOC_FSGETXATTR: Final = 0x801C581F  # _IOR('X', 31, struct fsxattr)
_FS_IOC_FSSETXATTR: Final = 0x401C5820  # _IOW('X', 32, struct fsxattr)
_PROJINHERIT: Final = 0x200
_ENFORCED: Final = "prjquota"  # as the mount table shows project quotas that are enforced
_FILESYSTEMS: Final = {"xfs": "xfs-project", "ext4": "ext4-project"}
_PROBE_KEY: Final = 0x7FFFFFFE  # the id the probe at start uses, and frees again
_PROBE_LIMIT: Final = 64 * 1024
_TIMEOUT: Final = 30.0  # seconds xfs_quota may take


class ProjectQuotas:
    name = "xfs-project"
    per_file = True

    def __init__(self) -> None:
        self._mount_point: Path | None = None
        self._foreign = False

    def works(self, scratch: Path) -> bool:
        mount = linux.mount_of(scratch)
        if mount.fstype not in _FILESYSTEMS or _ENFORCED not in mount.options:
            return False
        if shutil.which("xfs_quota") is None:
            return False
        self.name = _FILESYSTEMS[mount.fstype]
        self._mount_point, self._foreign = mount.point, mount.fstype != "xfs"
        probe = scratch / "quota"
        probe.mkdir(mode=0o700)
        with linux.opened(probe) as fd:
            self.tag(fd, _PROBE_KEY)
        self.limit(_PROBE_KEY, [], _PROBE_LIMIT, 16)
        try:
            return refused(probe / "file", 4 * _PROBE_LIMIT)
        finally:
            self.release(_PROBE_KEY)

    def fits(self, strategy: str) -> bool:
        return True  # every strategy that works on XFS or ext4

    def tag(self, fd: int, key: int) -> None:
        found = fcntl.ioctl(fd, _FS_IOC_FSGETXATTR, bytes(struct.calcsize(_FSXATTR)))
        xflags, extsize, nextents, _, cowextsize = struct.unpack(_FSXATTR, found)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            xflags |= _PROJINHERIT
        wanted = struct.pack(_FSXATTR, xflags, extsize, nextents, key, cowextsize)
        fcntl.ioctl(fd, _FS_IOC_FSSETXATTR, wanted)

    def release(self, key: int) -> None:
        self.limit(key, [], 0, 0)

    def limit(self, key: int, tops: list[int], blocks: int, inodes: int) -> None:
        assert self._mount_point is not None, "works() found the filesystem first"
        # -D, -P: /etc/projects and /etc/projid play no part, ids are numbers only
        argv = ["xfs_quota", "-x", "-D", "/dev/null", "-P", "/dev/null"]
        argv += ["-f"] if self._foreign else []
        command = f"limit -p bsoft=0 bhard={blocks} isoft=0 ihard={inodes} {int(key)}"
        argv += ["-c", command, str(self._mount_point)]
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise OSError(errno.ETIMEDOUT, f"xfs_quota took over {_TIMEOUT:g} s") from None
        # it may exit 0 when a command failed: what it says on stderr counts too
        if result.returncode != 0 or result.stderr.strip():
            message = result.stderr.strip() or f"exit code {result.returncode}"
            raise OSError(errno.EIO, f"xfs_quota: {message}")

"""btrfs quota groups: every subvolume has one (0/<its id>) once `btrfs quota enable` was
run on the filesystem, counting the extents the subvolume alone refers to ("exclusive").
A workspace of the btrfs strategy is a snapshot, whose exclusive size starts near zero and
grows with what the job writes; its limit is set on the snapshot's own group, through an
open descriptor of it (the BTRFS_IOC_QGROUP_LIMIT ioctl), and the group goes with the
subvolume when the workspace is deleted. btrfs counts no files, so only bytes are limited.
A plain directory is no subvolume: overlay and copy workspaces, and TMPDIR, stay with the
disk guard."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path
from typing import Final

from claude_batch_server.quotas.base import refused
from claude_batch_server.workspaces import linux

# _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args): qgroupid (0: the subvolume of the
# descriptor), then flags, max_rfer, max_excl, rsv_rfer, rsv_excl
_QGROUP_LIMIT: Final = 0x8030942B
_LIMIT_ARGS: Final = "=6Q"
_LIMIT_MAX_EXCL: Final = 2
_PROBE_LIMIT: Final = 64 * 1024


class BtrfsQgroups:
    name = "btrfs-qgroup"
    per_file = False

    def works(self, scratch: Path) -> bool:
        if linux.filesystem_type(scratch) != "btrfs":
            return False
        probe = scratch / "quota"
        linux.create_subvolume(probe)
        try:
            with linux.opened(probe) as fd:
                try:
                    self.limit(0, [fd], _PROBE_LIMIT, 0)
                except OSError as error:
                    if error.errno == errno.ENOTCONN:  # quotas are not enabled
                        return False
                    raise
            return refused(probe / "file", 8 * _PROBE_LIMIT)
        finally:
            with linux.opened(scratch) as parent:
                linux.destroy_subvolume(parent, probe.name)

    def fits(self, strategy: str) -> bool:
        return strategy == "btrfs"

    def tag(self, fd: int, key: int) -> None:
        """Nothing to tag: a subvolume's group counts all of it."""

    def limit(self, key: int, tops: list[int], blocks: int, inodes: int) -> None:
        for fd in tops:
            if os.fstat(fd).st_ino != linux.BTRFS_SUBVOLUME_INO:
                raise OSError(errno.EINVAL, "a quota group limits a subvolume, not a folder")
            args = bytearray(struct.pack(_LIMIT_ARGS, 0, _LIMIT_MAX_EXCL, 0, blocks, 0, 0))
            fcntl.ioctl(fd, _QGROUP_LIMIT, args)

    def release(self, key: int) -> None:
        """Nothing to do: the group goes with its subvolume."""

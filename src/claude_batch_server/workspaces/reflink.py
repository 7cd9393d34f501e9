"""Per-file copy-on-write clones (the FICLONE ioctl): XFS made with reflink=1, btrfs, and
other filesystems that share extents; not ext4. Each file of the workspace starts out
sharing every block with the stored repository and gets blocks of its own only where it
is written. Making the workspace still visits every file once (one clone, chown, chmod,
utime each), so its time grows with the file count while its disk use stays near zero."""

from __future__ import annotations

from pathlib import Path

from claude_batch_server.workspaces import linux
from claude_batch_server.workspaces.copy import CopyStrategy


class ReflinkStrategy(CopyStrategy):
    name = "reflink"

    def works(self, scratch: Path) -> bool:
        source, target = scratch / "source", scratch / "target"
        source.write_bytes(b"probe" * 1024)
        with source.open("rb") as reader, target.open("wb") as writer:
            try:
                linux.ficlone(reader.fileno(), writer.fileno())
            except OSError:
                return False
        return target.read_bytes() == source.read_bytes()

    def copy_file(self, source_fd: int, target_fd: int) -> None:
        linux.ficlone(source_fd, target_fd)

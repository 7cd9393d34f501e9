"""What every quota mechanism offers the policy: mechanism only."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Protocol


class Mechanism(Protocol):
    name: str  # as /system/storage names it
    # Whether the key is carried by each file (project ids): then every entry of a tree is
    # tagged, and what the trees hold when tagged counts against the limit.
    per_file: bool

    def works(self, scratch: Path) -> bool:
        """Whether a limit is really enforced in the empty root-only directory `scratch`."""
        ...

    def fits(self, strategy: str) -> bool:
        """Whether it can bound the workspaces of this copy-on-write strategy."""
        ...

    def tag(self, fd: int, key: int) -> None:
        """Counts the file or directory open at `fd` against the quota `key` (a directory:
        also what is made in it from now on), where the mechanism can."""
        ...

    def limit(self, key: int, tops: list[int], blocks: int, inodes: int) -> None:
        """Sets the hard limits (bytes, files) of `key`, whose trees are open at `tops`."""
        ...

    def release(self, key: int) -> None:
        """Clears the limits of `key`, whose trees are about to be removed."""
        ...


def refused(path: Path, size: int) -> bool:
    """Whether writing `size` bytes into the new file `path`, beneath a directory limited
    to less, fails for its quota (EDQUOT; XFS says ENOSPC for a project). For the probes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, bytes(size))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        return error.errno in (errno.EDQUOT, errno.ENOSPC)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    return False

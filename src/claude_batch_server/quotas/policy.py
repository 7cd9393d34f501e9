"""The policy of per-job disk quotas (see the package docstring)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from claude_batch_server.logs import log
from claude_batch_server.quotas.base import Mechanism
from claude_batch_server.quotas.btrfs import BtrfsQgroups
from claude_batch_server.quotas.project import ProjectQuotas
from claude_batch_server.workspaces import linux, trees

NONE: Final = "none: guard only"
# Keys are handed out from FIRST_KEY up, far above the ids an administrator numbers by
# hand; a key is free again once no workspace record holds it.
FIRST_KEY: Final = 0x43420000
KEYS: Final = 1 << 20
INODE_BYTES: Final = 4096  # one file or directory allowed per so many bytes of the limit
MIN_INODES: Final = 10_000
# Opened to be tagged: never a link, never a device's or FIFO's own open action.
_ENTRY_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def mechanisms() -> list[Mechanism]:
    """Every mechanism, in the order they are tried."""
    return [ProjectQuotas(), BtrfsQgroups()]


class DiskQuotas:
    def __init__(self, disk_max: int) -> None:
        self.disk_max = disk_max  # bytes a job may add to its workspace and TMPDIR
        self._mechanism: Mechanism | None = None

    def detect(self, scratch: Path, strategy: str) -> None:
        """Blocking, at start: takes the first mechanism that really limits a directory in
        the empty root-only `scratch` on DATA_DIR and bounds the workspaces of `strategy`,
        unless no limit is wanted."""
        if not self.disk_max:
            return
        for mechanism in mechanisms():
            try:
                if mechanism.fits(strategy) and mechanism.works(scratch):
                    self._mechanism = mechanism
                    return
            except OSError as error:
                log.warning("disk quota unusable", mechanism=mechanism.name, error=str(error))

    @property
    def active(self) -> bool:
        return self._mechanism is not None

    @property
    def name(self) -> str:
        return self._mechanism.name if self._mechanism is not None else NONE

    def free_key(self, used: Iterable[int | None]) -> int | None:
        """A key no workspace holds (None: quotas are off, or every key is held)."""
        if self._mechanism is None:
            return None
        taken = set(used)
        return next((key for key in range(FIRST_KEY, FIRST_KEY + KEYS) if key not in taken), None)

    def apply(self, key: int, tops: list[Path]) -> None:
        """Blocking: puts the trees `tops` (root's to reach, made for one job) under the
        quota `key`, whose limit is then `disk_max` on top of what they hold."""
        mechanism = self._mechanism
        assert mechanism is not None
        used, entries = 0, 0
        with contextlib.ExitStack() as stack:
            fds = [stack.enter_context(linux.opened(top)) for top in tops]
            for fd in fds:
                mechanism.tag(fd, key)
                for parent, name, st in trees.walk(fd) if mechanism.per_file else ():
                    used, entries = used + st.st_blocks * 512, entries + 1
                    _tag_entry(mechanism, parent, name, st, key)
            inodes = max(MIN_INODES, self.disk_max // INODE_BYTES)
            mechanism.limit(key, fds, used + self.disk_max, entries + inodes)

    def tag(self, key: int, directory: Path) -> None:
        """Blocking: counts the new, empty directory (the user's, in a directory only root
        may change) against the quota `key` from now on."""
        assert self._mechanism is not None
        with linux.opened(directory) as fd:
            self._mechanism.tag(fd, key)

    def release(self, key: int) -> None:
        """Blocking: the quota `key` holds no limit any more (its trees go next)."""
        if self._mechanism is not None:
            self._mechanism.release(key)


def _tag_entry(mechanism: Mechanism, parent: int, name: str, st: os.stat_result, key: int) -> None:
    """A link keeps the id it had (it cannot be opened without being followed)."""
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return
    with contextlib.suppress(OSError), linux.opened(name, _ENTRY_FLAGS, parent) as fd:
        mechanism.tag(fd, key)

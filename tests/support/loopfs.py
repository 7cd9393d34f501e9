"""Real filesystems for tests, as root: a sparse image file, mkfs, a loop device, a mount.

    with loop_filesystem("xfs", tmp_path) as mount_point:
        ...

Everything is undone on the way out (unmount, detach the loop device, delete the image),
also when the body fails. `LoopUnavailable` says why a filesystem cannot be had here
(not root, mkfs missing, no loop devices, ...): a reason to skip, not a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "ext4": ["mkfs.ext4", "-q", "-F"],
}
DEFAULT_SIZE = 1 << 30  # sparse: blocks are used only as they are written


class LoopUnavailable(Exception):
    """This filesystem cannot be made and mounted here."""


@contextmanager
def loop_filesystem(
    fstype: str, directory: Path, size: int = DEFAULT_SIZE, options: str = ""
) -> Iterator[Path]:
    """A fresh `fstype` filesystem of `size` bytes mounted under `directory`, with the
    mount `options` (e.g. `prjquota`)."""
    _check_possible(fstype)
    with ExitStack() as undo:
        image = directory / f"{fstype}.img"
        with image.open("wb") as file:
            file.truncate(size)
        undo.callback(image.unlink, missing_ok=True)
        _run([*MKFS[fstype], str(image)])
        device = _run(["losetup", "--find", "--show", str(image)])
        undo.callback(_run, ["losetup", "--detach", device])
        mount_point = directory / f"{fstype}-mount"
        mount_point.mkdir()
        undo.callback(mount_point.rmdir)
        _run(
            ["mount", "-t", fstype, *(["-o", options] if options else []), device, str(mount_point)]
        )
        undo.callback(_unmount, mount_point)
        yield mount_point


def _check_possible(fstype: str) -> None:
    if os.geteuid() != 0:
        raise LoopUnavailable("loop mounts need root")
    for tool in (MKFS[fstype][0], "losetup", "mount"):
        if shutil.which(tool) is None:
            raise LoopUnavailable(f"{tool} is not installed")


def _unmount(mount_point: Path) -> None:
    result = subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
    if result.returncode != 0:  # something still holds it: detach now, freed when let go
        _run(["umount", "--lazy", str(mount_point)])


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LoopUnavailable(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout.strip()

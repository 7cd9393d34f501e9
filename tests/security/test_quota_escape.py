"""A job's disk quota (quotas/) against the job itself: it owns its workspace, so whatever
its user may do there unprivileged it may try, to write past JOB_DISK_MAX."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorld, JobWorldFactory
from tests.jobs.test_quota import LIMIT, QuotaFs, quota_fs
from tests.security.conftest import Attacks

__all__ = ["quota_fs"]


def quota_world(job_world: JobWorldFactory, quota_fs: QuotaFs, **settings: str) -> JobWorld:
    """Jobs whose workspaces are on `quota_fs`, each limited to LIMIT."""
    return job_world(
        data_dir=quota_fs.mount_point,
        COW_STRATEGY=quota_fs.strategy,
        JOB_DISK_MAX=str(LIMIT),
        DATA_DIR_MIN_FREE="1%",
        **settings,
    )


def escape(world: JobWorld, fake_anthropic: FakeAnthropic, name: str, script: str) -> str:
    """A member's job runs `script` with its Bash tool: the job's transcript, as JSON, once
    the job is deleted."""
    fake_anthropic.add_script(name, [bash(script), text("Done.")])
    alice = world.member()
    job = alice.run(alice.repo, f"Escape {marker(name)}")["jobId"]
    alice.wait_ended(job)
    transcript = json.dumps(alice.events(job))
    assert alice.http.delete(f"/jobs/{job}").status_code == 204
    return transcript


# a btrfs subvolume of its own in the workspace (any user may make one where it may write,
# and it would have a quota group of its own, outside the workspace's); then twice the limit
NESTED = (
    "btrfs subvolume create nested >/dev/null; echo made=$?; "
    "head -c 64M /dev/zero > nested/big; echo head=$?"
)


def test_a_nested_subvolume_does_not_escape_the_quota(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, quota_fs: QuotaFs, attacks: Attacks
) -> None:
    if quota_fs.mechanism != "btrfs-qgroup":
        pytest.skip("subvolumes are btrfs's")
    transcript = escape(quota_world(job_world, quota_fs), fake_anthropic, "nested", NESTED)
    attacks.tried()
    # the subvolume is not made (jobs/seccomp.py), so writing past the limit is refused
    assert "made=1" in transcript, transcript[-2000:]
    assert "head=1" in transcript, transcript[-2000:]


# a folder of its own whose project id it sets to 0 (FS_IOC_FSSETXATTR: the kernel lets a
# file's owner change it, in the host's user namespace), then twice the limit into it
REPROJECT = r"""mkdir free && /usr/bin/python3 -c '
import fcntl, os, struct
fd = os.open("free", os.O_RDONLY)
x = fcntl.ioctl(fd, 0x801C581F, bytes(28))
xflags, extsize, nextents, _, cow = struct.unpack("=5I8x", x)
fcntl.ioctl(fd, 0x401C5820, struct.pack("=5I8x", xflags & ~0x200, extsize, nextents, 0, cow))
'; echo set=$?; head -c 64M /dev/zero > free/big; echo head=$?"""


def test_a_project_id_set_back_to_zero_does_not_escape_the_quota(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, quota_fs: QuotaFs, attacks: Attacks
) -> None:
    """Not run here (this kernel has no quota support for XFS or ext4): on a host that has,
    it shows whether a job can take its files out of its project."""
    if quota_fs.mechanism == "btrfs-qgroup":
        pytest.skip("project ids are XFS's and ext4's")
    transcript = escape(quota_world(job_world, quota_fs), fake_anthropic, "reproject", REPROJECT)
    attacks.tried()
    assert "head=1" in transcript, transcript[-2000:]  # writing past the limit refused


# file_setattr(2) (Linux 6.17): FS_IOC_FSSETXATTR's fields, the project id among them, set
# by path, with no ioctl; here it reads a file's attributes and sets them back unchanged,
# which the kernel allows on every filesystem that keeps them
SETATTR = r"""touch f && /usr/bin/python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
attr = ctypes.create_string_buffer(24)  # struct file_attr
if libc.syscall(468, -100, b"f", attr, 24, 0) != 0:
    print("getattr=" + os.strerror(ctypes.get_errno()))
elif libc.syscall(469, -100, b"f", attr, 24, 0) != 0:
    print("setattr=" + os.strerror(ctypes.get_errno()))
else:
    print("setattr=done")
'"""


def test_file_setattr_is_refused_like_its_ioctl(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, attacks: Attacks
) -> None:
    transcript = escape(job_world(), fake_anthropic, "setattr", SETATTR)
    attacks.tried()
    assert "setattr=" in transcript, transcript[-2000:]  # the call was made
    assert "setattr=Operation not permitted" in transcript, transcript[-2000:]


# a quota group counts what its subvolume alone refers to: a chunk written under the limit,
# then cloned (FICLONE, no new data) into TMPDIR, a plain folder of the same filesystem, is
# shared and no longer counts; three times the limit so, then the clones go
CLONED = (
    "for i in 1 2 3 4 5 6; do head -c 16M /dev/zero > w$i || break; "
    'cp --reflink=always w$i "$TMPDIR/c$i" || break; sync; done; '
    'rm -f "$TMPDIR"/c*; sync; echo kept=$(du -sm . | cut -f1)M'
)


@pytest.mark.xfail(
    strict=True,
    reason="a btrfs workspace's limit is on its exclusive size: extents it shares with a"
    " clone in TMPDIR (a plain folder beneath DATA_DIR) leave it; fixing needs TMPDIR under"
    " the same quota group (a subvolume in a parent group of both), not in jobs/seccomp.py",
)
def test_clones_into_tmpdir_do_not_escape_the_quota(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, quota_fs: QuotaFs, attacks: Attacks
) -> None:
    if quota_fs.mechanism != "btrfs-qgroup":
        pytest.skip("quota groups are btrfs's")
    transcript = escape(quota_world(job_world, quota_fs), fake_anthropic, "cloned", CLONED)
    attacks.tried()
    kept = re.search(r"kept=(\d+)M", transcript)
    assert kept is not None, transcript[-2000:]
    # no more than its quota (du rounds up to the next MiB)
    assert int(kept.group(1)) <= LIMIT // 2**20 + 1, transcript[-2000:]


@pytest.mark.xfail(
    strict=True,
    reason="the workspace is its user's, reachable from outside any job (workspaces/ is"
    " 0711): the user's own shell, which no filter of a job's binds, makes the subvolume"
    " that the job then fills; jobs/seccomp.py only binds the job's processes",
)
def test_a_subvolume_made_from_outside_the_job_does_not_escape_the_quota(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, quota_fs: QuotaFs, attacks: Attacks
) -> None:
    if quota_fs.mechanism != "btrfs-qgroup":
        pytest.skip("subvolumes are btrfs's")
    fake_anthropic.add_script("first", [text("Done.")])
    fill = "head -c 64M /dev/zero > nested/big; echo head=$?"
    fake_anthropic.add_script("fill", [bash(fill), text("Done.")])
    alice = quota_world(job_world, quota_fs).member()
    job = alice.run(alice.repo, f"Start {marker('first')}")["jobId"]
    alice.wait_ended(job)
    workspace = quota_fs.mount_point / "workspaces" / job
    # alice's login shell, not a job: no seccomp filter
    made = subprocess.run(
        ["runuser", "-u", alice.user.name, "--", "btrfs", "subvolume", "create", "nested"],
        cwd=workspace,
        capture_output=True,
        text=True,
        check=False,
    )
    attacks.tried()
    if made.returncode == 0:
        resumed = alice.http.post(f"/jobs/{job}/resume", json={"prompt": f"Fill {marker('fill')}"})
        assert resumed.status_code == 202, resumed.text
        alice.wait_ended(job)
        transcript = json.dumps(alice.events(job))
        assert "head=1" in transcript, transcript[-2000:]  # writing past the limit refused
    assert alice.http.delete(f"/jobs/{job}").status_code == 204

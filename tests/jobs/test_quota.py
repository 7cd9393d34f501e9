"""Per-job disk quotas on a real loop filesystem: a job that writes past JOB_DISK_MAX is
refused ("Disk quota exceeded", or ENOSPC for an XFS project) in its own workspace and
goes on; another user's job and a login are unaffected; the quota goes with the
workspace. btrfs quota groups run here; XFS project quotas need a kernel built with
CONFIG_XFS_QUOTA (this machine's is not: the case skips, saying so)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.support.loopfs import LoopUnavailable, loop_filesystem
from tests.support.users import UserFactory

SIZE = 768 * 1024 * 1024
LIMIT = 32 * 1024 * 1024
# past the limit, then on: the next command runs and says what the write got
HOG = "head -c 64M /dev/zero > big; echo head=$?; echo more > more.txt; echo more=$?"
MODEST = "head -c 8M /dev/zero > mine; stat -c size=%s mine"
REFUSED = ("Disk quota exceeded", "No space left on device")


@dataclass(frozen=True)
class QuotaFs:
    mount_point: Path
    mechanism: str
    strategy: str


@pytest.fixture(params=["btrfs", "xfs"])
def quota_fs(request: pytest.FixtureRequest, open_tmp: Path) -> Iterator[QuotaFs]:
    fstype = request.param
    try:
        options = "prjquota" if fstype == "xfs" else ""
        with loop_filesystem(fstype, open_tmp, SIZE, options) as mount_point:
            mount_point.chmod(0o755)
            if fstype == "btrfs":
                subprocess.run(["btrfs", "quota", "enable", str(mount_point)], check=True)
                yield QuotaFs(mount_point, "btrfs-qgroup", "btrfs")
            else:
                yield QuotaFs(mount_point, "xfs-project", "overlay")
    except LoopUnavailable as error:
        pytest.skip(f"{fstype} with quotas cannot be had here: {error}")


def test_a_job_past_its_quota_is_refused_alone(
    job_world: JobWorldFactory,
    fake_anthropic: FakeAnthropic,
    quota_fs: QuotaFs,
    users: UserFactory,
) -> None:
    fake_anthropic.add_script("hog", [bash(HOG), text("Went on.")])
    fake_anthropic.add_script("modest", [bash(MODEST), text("Wrote.")])
    admins = users.group()
    world = job_world(
        data_dir=quota_fs.mount_point,
        COW_STRATEGY=quota_fs.strategy,
        JOB_DISK_MAX=str(LIMIT),
        DATA_DIR_MIN_FREE="1%",
        ADMIN_GROUP=admins,
    )
    overseer = users.create(groups=(admins,))
    with world.server.client(world.server.login(overseer.name, overseer.password)) as client:
        assert client.get("/system/storage").json()["quota"] == quota_fs.mechanism
    alice, bob = world.member(), world.member()

    hog = alice.run(alice.repo, f"Fill {marker('hog')}")["jobId"]
    ended = alice.wait_ended(hog)

    assert ended["status"] == "completed"  # its own choice: it went on after the refusal
    transcript = json.dumps(alice.events(hog))
    assert any(refusal in transcript for refusal in REFUSED)
    assert "head=1" in transcript and "more=1" in transcript  # refused, and went on
    quota = _quota_of(world.server.data_dir, hog, quota_fs)
    assert quota.limited()
    # bob's job writes its own share while alice's quota is full; logins go on
    modest = bob.run(bob.repo, f"Write {marker('modest')}")["jobId"]
    assert bob.wait_ended(modest)["status"] == "completed"
    assert f"size={8 * 1024 * 1024}" in json.dumps(bob.events(modest))
    assert world.server.login(bob.user.name, bob.user.password)

    assert alice.http.delete(f"/jobs/{hog}").status_code == 204
    assert not quota.limited()


@dataclass(frozen=True)
class Quota:
    """One job's quota as the filesystem's own tools show it."""

    mount_point: Path
    mechanism: str
    key: str  # the btrfs group (0/<subvolume id>) or the XFS project id

    def limited(self) -> bool:
        if self.mechanism == "btrfs-qgroup":
            _run("btrfs", "subvolume", "sync", str(self.mount_point))  # deletions done
            shown = _run("btrfs", "qgroup", "show", "-e", "--raw", str(self.mount_point))
            rows = [line.split() for line in shown.splitlines()]
            return any(row[:1] == [self.key] and row[3] == str(LIMIT) for row in rows)
        shown = _run("xfs_quota", "-x", "-c", "report -p -n -b", str(self.mount_point))
        rows = [line.split() for line in shown.splitlines()]
        return any(row[:1] == [f"#{self.key}"] and row[3] != "0" for row in rows)


def _quota_of(data_dir: Path, job_id: str, quota_fs: QuotaFs) -> Quota:
    if quota_fs.mechanism == "btrfs-qgroup":
        workspace = data_dir / "workspaces" / job_id
        subvolume = _run("btrfs", "inspect-internal", "rootid", str(workspace)).strip()
        return Quota(data_dir, quota_fs.mechanism, f"0/{subvolume}")
    record = json.loads((data_dir / "cow" / "jobs" / job_id / "record.json").read_text())
    return Quota(data_dir, quota_fs.mechanism, str(record["quota"]))


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

"""The flavours of control groups on their own: the v2 code on this host's real v2 hierarchy
(tracking and kill; it has no controllers here) and on a fake tree (limits, delegation);
v1's freeze-and-kill on this host's real v1 hierarchies; which flavour `detect` finds."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_batch_server.cgroups import detect, v1, v2
from claude_batch_server.cgroups.base import ControlGroups, Flavour, Limits, members
from claude_batch_server.jobs import spawner
from claude_batch_server.jobs.containment import Containment
from tests.support.server import wait_for

UNIFIED = Path("/sys/fs/cgroup/unified")
# a tree that leaves its first process's session and process group, as a daemon does
TREE = "setsid sh -c 'sleep 1000 & sleep 1000' & sleep 1000 & wait"


def _join(procs: list[str]) -> None:
    for path in procs:
        with open(path, "w") as file:
            file.write(str(os.getpid()))


def start_tree(procs: list[str]) -> subprocess.Popen[bytes]:
    """A process tree whose first process joined `procs` before it ran."""
    return subprocess.Popen(["sh", "-c", TREE], preexec_fn=lambda: _join(procs))


def alive(pids: list[int]) -> list[int]:
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.append(pid)
    return left


@pytest.fixture
def root() -> Iterator[str]:
    """A root group name of this test's own; whatever is left of it is removed after."""
    name = f"claude-batch-test-{secrets.token_hex(4)}"
    yield name
    groups = detect(name)
    assert isinstance(groups, v1.V1Groups) and groups.tracker is not None
    for job in groups.names():
        groups.kill(job)
        groups.remove(job)
    groups.close()
    assert not groups.tracker.parent.exists()


def members_at_least(procs: Path, count: int) -> list[int] | None:
    found = members(procs)
    return found if len(found) >= count else None


def kill_a_tree(groups: ControlGroups, procs_file: Path) -> None:
    procs = groups.create("job-1", Limits())
    first = start_tree(procs)
    pids = wait_for(lambda: members_at_least(procs_file, 4), 10, "the tree to start")
    assert groups.names() == ["job-1"]

    groups.kill("job-1")

    first.wait(5)
    assert members(procs_file) == [] and alive(pids) == []
    groups.remove("job-1")
    assert groups.names() == []


def test_v2_tracks_and_kills_a_whole_tree(root: str) -> None:
    own = UNIFIED  # the root of this host's v2 hierarchy, where the server's group is
    assert (own / "cgroup.procs").exists(), "this host has no cgroup v2 hierarchy"
    groups = v2.V2Groups.prepare(own, root)
    kill_a_tree(groups, own / root / "job-1" / "cgroup.procs")


def test_v1_freezes_and_kills_a_whole_tree_without_v2(root: str) -> None:
    found = detect(root)
    assert isinstance(found, v1.V1Groups), "this host runs cgroup v1"
    groups = v1.V1Groups(found.parents, tracker=None)  # only the v1 hierarchies
    kill_a_tree(groups, found.parents["pids"] / "job-1" / "cgroup.procs")


def test_v1_limits_are_written(root: str) -> None:
    groups = detect(root)
    assert isinstance(groups, v1.V1Groups) and groups.flavour is Flavour.V1
    assert groups.tracker is not None  # the v2 hierarchy beside v1 kills
    groups.create("job-1", Limits(memory_max=256 << 20, cpus=1.5, pids_max=100))
    memory, cpu, pids = (groups.parents[name] / "job-1" for name in ("memory", "cpu", "pids"))
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(256 << 20)
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "150000"
    assert (pids / "pids.max").read_text().strip() == "100"
    groups.remove("job-1")


def fake_v2_tree(path: Path) -> Path:
    """What a systemd unit with Delegate=yes gets: its group, with controllers to hand down."""
    path.mkdir()
    (path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (path / "cgroup.subtree_control").write_text("")
    (path / "cgroup.procs").write_text("")
    return path


def test_v2_writes_limits_on_a_fake_tree(tmp_path: Path) -> None:
    own = fake_v2_tree(tmp_path / "unit.service")
    groups = v2.V2Groups.prepare(own, "claude-batch-x")
    assert (own / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    parent = own / "claude-batch-x"
    assert (parent / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"

    procs = groups.create("job-1", Limits(memory_max=512 << 20, cpus=1.5, pids_max=100))

    job = parent / "job-1"
    assert procs == [str(job / "cgroup.procs")]
    assert (job / "memory.max").read_text() == str(512 << 20)
    assert (job / "memory.oom.group").read_text() == "1"
    assert (job / "cpu.max").read_text() == "150000 100000"
    assert (job / "pids.max").read_text() == "100"
    assert groups.names() == ["job-1"]


def test_v2_without_a_limit_writes_none(tmp_path: Path) -> None:
    groups = v2.V2Groups.prepare(fake_v2_tree(tmp_path / "unit.service"), "claude-batch-x")
    groups.create("job-1", Limits())
    written = sorted(path.name for path in (groups.parent / "job-1").iterdir())
    assert written == []


def test_detect_finds_v2_where_the_hierarchy_offers_controllers(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    mount.mkdir()
    fake_v2_tree(mount / "system.slice")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(
        f"30 23 0:26 / {mount} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
    )
    (proc / "cgroup").write_text("0::/system.slice\n")

    groups = detect("claude-batch-x", proc)

    assert isinstance(groups, v2.V2Groups) and groups.flavour is Flavour.V2
    assert groups.parent == mount / "system.slice" / "claude-batch-x"
    assert groups.controllers == {"cpu", "memory", "pids"}


def test_detect_finds_none_without_cgroups(tmp_path: Path) -> None:
    (tmp_path / "mountinfo").write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    (tmp_path / "cgroup").write_text("0::/\n")
    assert detect("claude-batch-x", tmp_path) is None


def test_the_sweep_kills_only_groups_of_jobs_not_running(root: str) -> None:
    contained = Containment(detect(root), Limits())
    first = start_tree(contained.create("dead"))
    kept = start_tree(contained.create("alive"))
    try:
        assert contained.sweep(keep=lambda: ["alive"]) == 1
        first.wait(5)
        assert kept.poll() is None
    finally:
        contained.end("alive")
        kept.wait(5)


def test_the_spawners_child_is_born_in_the_v2_group_and_joins_each_v1_one(root: str) -> None:
    groups = detect(root)
    assert isinstance(groups, v1.V1Groups) and groups.tracker is not None
    procs = groups.create("job-1", Limits())
    reader, writer = os.pipe()
    pid, joined = spawner._fork(procs)
    if pid == 0:  # the child: as the spawner's does, then tell where it is
        try:
            born = Path("/proc/self/cgroup").read_text()
            spawner._join(procs, joined)
            os.write(writer, (born + "--\n" + Path("/proc/self/cgroup").read_text()).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as report:
        born, _, now = report.read().partition("--\n")
    os.waitpid(pid, 0)

    group = f"/{root}/job-1"
    assert joined == str(groups.tracker.parent / "job-1" / "cgroup.procs")  # clone3 did it
    assert any(line.startswith("0::") and line.endswith(group) for line in born.splitlines())
    where = dict(line.split(":", 2)[1:] for line in now.splitlines())
    for controller in ("memory", "cpu", "cpuacct", "pids", "freezer", ""):
        assert where[controller].endswith(group), controller

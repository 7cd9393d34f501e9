"""What works where, and what `auto` picks: the filesystem of DATA_DIR itself decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from claude_batch_server.settings import CowStrategy
from claude_batch_server.workspaces import WorkspaceEngine, WorkspaceError, registry
from tests.workspaces.conftest import WORKING, kind

AUTO = {"btrfs": "overlay", "xfs": "overlay", "ext4": "overlay"}


@pytest.mark.parametrize("strategy", ["auto"])
@pytest.mark.parametrize("filesystem", ["disk", "xfs", "btrfs"])
def test_auto_picks_the_best_that_works(
    engine: WorkspaceEngine, filesystem: str, data_dir: Path
) -> None:
    fstype = kind(filesystem)
    if fstype not in AUTO:
        pytest.skip(f"no expectation for {fstype}")

    report = engine.report()

    assert engine.strategy_name == AUTO[fstype]
    assert report == {
        "dataDir": str(data_dir),
        "filesystem": fstype,
        "strategy": AUTO[fstype],
        "available": {name: name in WORKING[fstype] for name in WORKING["btrfs"]},
        "quota": "none: guard only",  # no quotas asked for
    }
    assert not any((data_dir / "cow" / "tmp").iterdir())  # the probes cleaned up


@pytest.mark.parametrize("filesystem", ["disk", "xfs"])
def test_a_strategy_that_does_not_work_is_refused(data_dir: Path, filesystem: str) -> None:
    with pytest.raises(WorkspaceError, match="COW_STRATEGY=btrfs does not work"):
        WorkspaceEngine(data_dir, CowStrategy.BTRFS)


@pytest.mark.parametrize(
    ("works", "picked"),
    [
        ({"overlay": True, "btrfs": True, "reflink": True, "copy": True}, "overlay"),
        ({"overlay": False, "btrfs": True, "reflink": True, "copy": True}, "btrfs"),
        ({"overlay": False, "btrfs": False, "reflink": True, "copy": True}, "reflink"),
        ({"overlay": False, "btrfs": False, "reflink": False, "copy": True}, "copy"),
    ],
)
def test_auto_falls_back_in_the_measured_order(works: dict[str, bool], picked: str) -> None:
    assert registry.choose(CowStrategy.AUTO, works, "here").name == picked


SHARED = {"btrfs": "btrfs", "xfs": "reflink", "ext4": "copy"}


@pytest.mark.parametrize("filesystem", ["disk", "xfs", "btrfs"])
def test_auto_for_jobs_on_other_hosts_picks_plain_directories(
    data_dir: Path, filesystem: str
) -> None:
    """With Slurm, the nodes see DATA_DIR's folders but none of this host's mounts."""
    fstype = kind(filesystem)
    if fstype not in SHARED:
        pytest.skip(f"no expectation for {fstype}")
    engine = WorkspaceEngine(data_dir, CowStrategy.AUTO, shared=True)
    assert engine.strategy_name == SHARED[fstype]
    assert engine.report()["available"]["overlay"] is True  # it works, it is not chosen

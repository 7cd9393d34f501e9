"""A job that fills DATA_DIR (a small loop-mounted XFS, which keeps no blocks back for
root) is stopped; another user's job, logins, listings and the database go on, and new
starts wait until the space is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.support.loopfs import LoopUnavailable, loop_filesystem

SIZE = 512 * 1024 * 1024
FILL = "head -c 1G /dev/zero > big; sleep 60"  # ENOSPC long before 1 GiB; then it lingers
WAIT_FOR_GO = "while [ ! -e go ]; do sleep 0.2; done; echo after > after.txt"


@pytest.fixture
def small_data_dir(open_tmp: Path) -> Iterator[Path]:
    try:
        with loop_filesystem("xfs", open_tmp, SIZE) as mount_point:
            mount_point.chmod(0o755)
            yield mount_point
    except LoopUnavailable as error:
        pytest.skip(str(error))


def test_a_job_filling_data_dir_is_stopped_and_the_server_goes_on(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, small_data_dir: Path
) -> None:
    fake_anthropic.add_script("fill", [bash(FILL), text("Filled.")])
    fake_anthropic.add_script("patient", [bash(WAIT_FOR_GO), text("Waited.")])
    world = job_world(data_dir=small_data_dir, DATA_DIR_MIN_FREE="10%")
    alice, bob = world.member(), world.member()
    patient = bob.run(bob.repo, f"Wait {marker('patient')}")["jobId"]
    bob.wait_status(patient, {"running"})

    hog = alice.run(alice.repo, f"Fill {marker('fill')}")["jobId"]
    failed = alice.wait_ended(hog)

    assert failed["status"] == "failed"
    assert "DATA_DIR_MIN_FREE" in failed["error"] and "grew most" in failed["error"]
    # bob's job was not taken along: it goes on, and its transcript is kept whole
    (small_data_dir / "workspaces" / patient / "go").touch()
    assert bob.wait_ended(patient)["status"] == "completed"
    assert bob.events(patient)[-1]["event"]["status"] == "completed"
    # the server still logs in and lists, while the hog's file still takes the space
    assert world.server.login(bob.user.name, bob.user.password)
    assert {job["jobId"] for job in bob.http.get("/jobs").json()["jobs"]} == {patient}
    waiting = bob.run(bob.repo, "Hello")["jobId"]
    assert bob.job(waiting)["status"] == "queued"  # a free slot, but no space: it waits

    assert alice.http.delete(f"/jobs/{hog}").status_code == 204
    assert bob.wait_ended(waiting)["status"] == "completed"

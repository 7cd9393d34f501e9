"""A diff of a workspace holding a huge sparse file does not stall the server (issue 15):
the file is left out and named, parallel requests share one computation, an ended job's
diff is kept, and a diff past its time limit answers 503."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from claude_batch_server.accounts import lookup
from claude_batch_server.cgroups.base import root_name
from claude_batch_server.errors import Unavailable
from claude_batch_server.files import diffs
from claude_batch_server.jobs.containment import Containment
from claude_batch_server.servergit import Start
from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import git, home_of, make_git_repo
from tests.support.users import UserFactory

SPARSE = "truncate -s 50G big.img && echo small > small.txt"
PARALLEL = 8


def computed(log: str, job_id: str) -> int:
    """How many diffs of the job the server computed, from its log."""
    lines = (json.loads(line) for line in log.splitlines() if line.startswith("{"))
    return sum(
        1 for line in lines if line.get("event") == "diff computed" and line.get("job") == job_id
    )


def test_a_huge_sparse_file_is_left_out_and_the_server_answers(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script("sparse", [bash(SPARSE), text("Made.")])
    world = job_world()
    alice = world.member()
    job = alice.run(alice.repo, f"Make {marker('sparse')}")
    assert alice.wait_ended(job["jobId"])["status"] == "completed"

    def get_diff(_: int) -> httpx.Response:
        return alice.http.get(f"/jobs/{job['jobId']}/diff", timeout=120)

    with ThreadPoolExecutor(PARALLEL) as pool:
        answers = pool.map(get_diff, range(PARALLEL))
        health = [httpx.get(f"{world.server.url}/health", timeout=60) for _ in range(3)]
        answers = list(answers)

    assert [response.status_code for response in health] == [200, 200, 200]
    for response in answers:
        assert response.status_code == 200, response.text
        assert (
            "left out, larger than" in response.text
            and "'big.img' (53687091200 bytes)" in response.text
        )
        assert "+small" in response.text and "b/big.img" not in response.text
    assert alice.http.get(f"/jobs/{job['jobId']}/diff").text == answers[0].text
    assert computed(world.server.log(), job["jobId"]) == 1  # shared, then kept


def test_a_diff_past_its_time_limit_answers_503(
    users: UserFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = users.create()
    source = make_git_repo(home_of(user), user, {"a.txt": "a\n"})
    (source / "a.txt").write_text("b\n")
    account = lookup(user.name)
    assert account is not None
    start = Start(source / ".git", git(source, "rev-parse", "HEAD").strip())
    contained = Containment.for_host(root_name(tmp_path), diffs.LIMITS)
    bounded = diffs.BoundedDiffs(contained)
    monkeypatch.setattr(diffs, "WAIT", 0.001)

    async def ask() -> None:
        with pytest.raises(Unavailable, match="taking longer than"):
            await bounded.diff("job1", "1:ended", account, source, start)
        await asyncio.sleep(0)
        monkeypatch.setattr(diffs, "WAIT", 60)
        again = await bounded.diff("job1", "1:ended", account, source, start)
        assert b"-a\n+b\n" in again

    asyncio.run(ask())
    contained.close()

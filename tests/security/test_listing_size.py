"""GET /jobs?limit=500 over a user's own large jobs: the page is bounded in size, not only
in jobs, so that no user makes the server hold its whole history at once (one user's
four listings of 500 jobs of 512 Ki-character prompts and outputs took 3.8 GB)."""

from __future__ import annotations

import pytest

from claude_batch_server.api.schemas.jobs import MAX_PROMPT
from claude_batch_server.jobs.reading import PAGE_CHARS
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks

JOBS = 12  # 6 Mi characters of prompts: more than one page


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_listing_of_large_jobs_is_paged_by_size(
    job_world: JobWorldFactory, attacks: Attacks, database: str, request: pytest.FixtureRequest
) -> None:
    settings = {}
    if database == "postgres":
        settings["DATABASE_URL"] = request.getfixturevalue("postgres").create_database()
    alice = job_world(**settings).member()
    made = {
        alice.create_job(alice.repo, f"{n:02d}" + "p" * (MAX_PROMPT - 2))["jobId"]
        for n in range(JOBS)
    }
    attacks.tried()
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        answer = alice.http.get("/jobs", params=params)
        assert answer.status_code == 200, answer.text[:300]
        pages += 1
        # what fits the budget, and the one job that crosses it
        assert len(answer.content) < PAGE_CHARS + 2 * MAX_PROMPT, len(answer.content)
        body = answer.json()
        seen += [job["jobId"] for job in body["jobs"]]
        cursor = body["nextCursor"]
        if cursor is None or pages > JOBS:
            break
    assert pages > 1
    assert sorted(seen) == sorted(made)  # every job once, none lost between pages

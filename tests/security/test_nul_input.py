"""NUL bytes where a user may put text: PostgreSQL stores no NUL in text, SQLite does;
either way the answer is a clear 4xx or a success, never a 500."""

from __future__ import annotations

import re

import pytest

from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.api import Api
from tests.support.users import UserFactory


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_nul_bytes_in_every_text_field(
    job_world: JobWorldFactory,
    users: UserFactory,
    attacks: Attacks,
    database: str,
    request: pytest.FixtureRequest,
) -> None:
    admins = users.group()
    settings = {"ADMIN_GROUP": admins}
    if database == "postgres":
        settings["DATABASE_URL"] = request.getfixturevalue("postgres").create_database()
    world = job_world(**settings)
    alice = world.member()
    admin = Api(world.server, users.create(groups=(admins,)))
    world.apis.append(admin)
    job_id = alice.create_job(alice.repo, "a job to poke at")["jobId"]
    nul = "a\x00b"
    attempts = [
        (alice, "POST", "/auth/login", {"json": {"username": nul, "password": "x"}}),
        (alice, "POST", "/jobs", {"json": {"repository": alice.repo, "prompt": nul}}),
        (
            alice,
            "POST",
            "/jobs",
            {
                "json": {
                    "repository": alice.repo,
                    "prompt": "x",
                    "options": {"appendSystemPrompt": nul},
                }
            },
        ),
        (
            alice,
            "POST",
            "/jobs",
            {"json": {"repository": alice.repo, "prompt": "x", "images": [nul]}},
        ),
        (alice, "POST", f"/jobs/{job_id}/resume", {"json": {"prompt": nul}}),
        (
            alice,
            "POST",
            "/repositories/register",
            {"json": {"name": "nul1", "gitUrl": "/tmp/none", "description": nul}},
        ),
        (
            alice,
            "POST",
            "/repositories/register",
            {"json": {"name": "nul2", "gitUrl": "/tmp/none", "branch": nul}},
        ),
        (alice, "GET", "/jobs/a%00b", {}),
        (alice, "GET", "/repositories/a%00b", {}),
        (alice, "GET", "/jobs", {"params": {"status": nul}}),
        (alice, "GET", "/jobs", {"params": {"cursor": nul}}),
        (admin, "GET", "/jobs", {"params": {"user": nul}}),
        (admin, "GET", "/audit", {"params": {"user": nul}}),
        (admin, "GET", "/repositories", {"params": {"owner": nul}}),
        (alice, "GET", f"/jobs/{job_id}/files", {"params": {"path": nul}}),
        (alice, "GET", f"/jobs/{job_id}/files/content", {"params": {"path": nul}}),
        (alice, "GET", f"/jobs/{job_id}/files/download", {"params": {"path": nul}}),
        (alice, "GET", f"/jobs/{job_id}/events", {"params": {"follow": "false", "after": nul}}),
    ]
    failures = []
    for api, method, path, extra in attempts:
        extra = {**extra, "headers": {"Connection": "close"}}
        response = api.http.request(method, path, **extra)  # type: ignore[arg-type]
        attacks.tried()
        if response.status_code >= 500:
            failures.append((method, path, extra, response.status_code, response.text[:200]))

    # the dashboard, with alice's session and her form token
    page = world.server.client()
    page.cookies.set("cbs_session", alice.token)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.get("/ui/").text)
    assert csrf is not None
    form = {"csrf": csrf.group(1)}
    headers = {"Origin": f"http://127.0.0.1:{world.server.port}", "Connection": "close"}
    pages = [
        ("GET", "/ui/", {"params": {"repository": nul, "status": nul}}),
        ("GET", "/ui/jobs/rows", {"params": {"repository": nul}}),
        ("GET", "/ui/jobs/a%00b", {}),
        ("GET", f"/ui/jobs/{job_id}/files", {"params": {"path": nul}}),
        ("POST", "/ui/jobs/new", {"data": {**form, "repository": alice.repo, "prompt": nul}}),
        (
            "POST",
            "/ui/repositories/register",
            {"data": {**form, "name": "nul3", "git_url": "/tmp/none", "description": nul}},
        ),
        ("POST", f"/ui/jobs/{job_id}/resume", {"data": {**form, "prompt": nul}}),
    ]
    for method, path, extra in pages:
        response = page.request(method, path, headers=headers, **extra)  # type: ignore[arg-type]
        attacks.tried()
        if response.status_code >= 500:
            failures.append((method, path, extra, response.status_code, response.text[:200]))
    page.close()
    assert failures == [], "\n".join(map(str, failures))
